"""Learner benchmark on real tables and the simulator, against river and Vowpal Wabbit.

Run: ``python bench/bench_learners.py`` (about 11 minutes on one core of a lightly
loaded 2-core machine, ``--cpu 1``; ``--quick`` caps
every stream at 30k rows and times once; ``--cpu N`` pins the process to CPU ``N``, as
``taskset -c N`` does; ``--json PATH`` writes every figure). For every stream it prints
one table, every learner predicting each example before learning it (progressive
validation) in the stream's order:

* river as a river user runs it ("river pipeline"): the columns ``eval`` chose, numbers
  through ``preprocessing.StandardScaler``, strings through
  ``preprocessing.OneHotEncoder(drop_zeros=True)`` (river's ``compose.SelectType``
  idiom), into ``linear_model.LogisticRegression`` with plain SGD (river's default,
  lr 0.01) or AdaGrad (lr 0.1), or ``facto.FMClassifier`` (8 factors);
* the same three river learners on *our* features ("river, our features"): the hashed
  ``{index: value}`` rows our featuriser makes (numbers as sign(x)·log(1+|x|), integer
  columns with repeating values also one-hot);
* Vowpal Wabbit on our features, plain (adaptive, normalized, invariant) and ``--ftrl``,
  one pass;
* ours at the defaults of ``streamlearn eval`` (batch 1024), and the largest difference
  in any prediction at ``--batch-size 1000`` and ``1`` (the batch only chunks the work).

AUC is the exact progressive ROC AUC; log loss is the mean progressive log loss (the
constant predictor's, the entropy of the positive rate, is printed with each table).
The acceptance bars of the learners' issue are checked and printed under each table.

What each timing includes (examples/s = examples / seconds; the best of ``--repeats``
runs, 3 by default, each on a fresh learner, so a noisy neighbour on a shared machine
only ever slows a run down; ``--river-repeats`` sets river's, whose runs take longest):

* ours: featurising the stream's Arrow columns (dictionary encoding, hashing each
  distinct value once, the numeric transform: :meth:`Featuriser.transform_columns`),
  predicting and learning, exactly what ``eval`` times; reading the file and the
  metrics are left out. The compiled kernels are loaded before the clock starts (their
  first-call cost is printed once at the top). ``ftrl kernel`` is the learning kernel
  alone on rows already featurised;
* Vowpal Wabbit: parsing its own text file (the same hashed ``idx:val`` features,
  written beforehand, untimed), learning, and writing its predictions, one pass, in
  this process (``pyvw``);
* river, our features: ``predict_proba_one`` + ``learn_one`` on prebuilt dicts (building
  the dicts is left out, which favours river);
* river pipeline: ``predict_proba_one`` + ``learn_one`` of the pipeline on the rows as
  dicts (its scaling and one-hot encoding included; making the dicts is left out).
  river's FM runs at 10-3,000 examples/s, so it sees the first :data:`RIVER_FM_ROWS`
  rows only and is timed once; the column "AUC first N" compares every learner on
  those rows.

Streams (row order as given; none has a time column):

* ``adult``, ``kdd04_bio``, ``womens_clothing_reviews`` from ``../shared/data`` (see its
  README; the clothing table without its leaking ``Rating``/``Title``/``Review Text``),
  prepared exactly as ``streamlearn eval --data T --label L`` prepares them;
* the Open Bandit Dataset sample (ZOZOTOWN, CC BY 4.0), read from the ``obp==0.4.1``
  wheel: ``pip download --no-deps obp==0.4.1 -d /tmp/obp`` (or set ``OBP_WHEEL``);
  skipped, and said so, when the wheel is absent;
* the simulator's session-shaped log (:class:`streamlearn.simulator.traffic.Traffic`, the traffic of
  ``streamlearn up``): users in sessions (bursts of one user's requests, a few very
  active users), Zipf-like item popularity, the feed surface, 3 of 20 candidates shown
  in random order; a shown item is a positive when it is clicked, liked, shared or
  converted (the ``feed`` head).

The machine may be shared: compare ratios within one run, not absolute figures across
runs.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import math
import numbers
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamlearn.models.learners.river_adapter import river_rows
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import DEFAULT_BATCH_SIZE, create
from streamlearn.offline import tables
from streamlearn.offline.prequential import EvalConfig, Prepared, prepare, run

DATA = Path(
    os.environ.get("STREAMLEARN_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)
OBP_WHEEL = Path(os.environ.get("OBP_WHEEL", "/tmp/obp/obp-0.4.1-py3-none-any.whl"))
RIVER_FM_ROWS = 2_000
SIM_ROWS = 150_000
OURS = ("ftrl", "fm", "deep")
TABLES = (
    ("adult", "income", ()),
    ("kdd04_bio", "target", ()),
    ("womens_clothing_reviews", "Recommended IND", ("Rating", "Title", "Review Text")),
)


@dataclass
class Result:
    """One learner on one stream."""

    name: str
    family: str  # "river pipeline", "river, our features", "vw", "ours"
    rows: int
    examples_per_s: float
    p: np.ndarray
    runs: int


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def timed(fn: Callable[[], np.ndarray], rows: int, repeats: int) -> tuple[float, np.ndarray]:
    """``fn``'s predictions and the best examples/s over ``repeats`` runs."""
    best, p = math.inf, np.empty(0)
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        p = fn()
        best = min(best, time.perf_counter() - start)
    return rows / best, p


# -- streams ------------------------------------------------------------------------------
def open_bandit(tmp: Path) -> Path | None:
    """The OBD sample (random + bts, all campaigns) in timestamp order, as a Parquet file."""
    if not OBP_WHEEL.is_file():
        return None
    records: list[dict[str, str]] = []
    with zipfile.ZipFile(OBP_WHEEL) as wheel:
        for policy in ("random", "bts"):
            text = wheel.read(f"obp/dataset/obd/{policy}/all/all.csv").decode()
            records += list(csv.DictReader(io.StringIO(text)))
    records.sort(key=lambda r: r["timestamp"])
    table = pa.Table.from_pylist(
        [
            {
                "item": r["item_id"],
                "position": r["position"],
                **{f"user_feature_{k}": r[f"user_feature_{k}"] for k in range(4)},
                "affinity": float(r[f"user-item_affinity_{r['item_id']}"]),
                "click": int(r["click"]),
            }
            for r in records
        ]
    )
    path = tmp / "open_bandit.parquet"
    pq.write_table(table, path)
    return path


def simulated(tmp: Path, n: int, seed: int = 0) -> tuple[Path, str]:
    """``n`` feed impressions of the simulator's session traffic (random ranking) as a
    Parquet file, and a line describing the log's shape."""
    from streamlearn.simulator import World
    from streamlearn.simulator.inprocess import POSITIVES
    from streamlearn.simulator.surfaces import default_surfaces
    from streamlearn.simulator.traffic import Traffic

    world = World(seed=seed)
    traffic = Traffic(world, default_surfaces(world), 150.0, "bench", ads_fraction=0.0)
    rows: list[dict[str, Any]] = []
    requests: list[str] = []
    while len(rows) < n:
        planned = traffic.plan()
        outcome = traffic.show(planned, None)
        requests.append(planned.request.user_id)
        engaged = {s.item_id for _, t, s in outcome.engagements if t in POSITIVES["feed"]}
        rows += [
            {
                "user_id": s.user_id,
                "item_id": s.item_id,
                "item_category": s.category,
                "position": s.position,
                "label": int(s.item_id in engaged),
            }
            for s in outcome.shown
        ]
    table = pa.Table.from_pylist(rows[:n])
    path = tmp / "simulator.parquet"
    pq.write_table(table, path)
    per_user = np.unique(np.array(requests), return_counts=True)[1]
    items = np.sort(np.unique(table.column("item_id").to_numpy(), return_counts=True)[1])
    top = items[::-1][: max(1, items.size // 100)].sum() / n
    shape = (
        f"{len(requests):,} requests from {per_user.size:,} users (the top 10% of users "
        f"make {np.sort(per_user)[::-1][: per_user.size // 10].sum() / len(requests):.0%}); "
        f"{items.size:,} items, the top 1% get {top:.0%} of the impressions"
    )
    return path, shape


# -- baselines ----------------------------------------------------------------------------
def featurise(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    featuriser = create("ftrl", prepared.spec).featuriser
    return featuriser.transform_columns(
        prepared.table.num_rows, *tables.feature_columns(prepared.table, prepared.spec)
    )


def raw_dicts(prepared: Prepared) -> list[dict[str, Any]]:
    """The stream's feature columns as river takes rows: one dict per row, missing
    values left out."""
    return [{k: v for k, v in r.items() if v is not None} for r in prepared.table.to_pylist()]


def river_pipeline(estimator: Any) -> Any:
    from river import compose, preprocessing

    numeric = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    categorical = compose.SelectType(str) | preprocessing.OneHotEncoder(drop_zeros=True)
    return (numeric + categorical) | estimator


def river_learners() -> dict[str, Callable[[], Any]]:
    from river import facto, linear_model, optim

    return {
        "LR (SGD)": lambda: linear_model.LogisticRegression(),
        "LR (AdaGrad)": lambda: linear_model.LogisticRegression(optim.AdaGrad()),
        "FM": lambda: facto.FMClassifier(n_factors=8, seed=0),
    }


def run_river(make: Callable[[], Any], xs: list[Any], y: np.ndarray) -> np.ndarray:
    model = make()
    labels = (y > 0).tolist()
    p = np.empty(len(xs))
    for r, (x, label) in enumerate(zip(xs, labels, strict=True)):
        p[r] = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, label)
    return p


def write_vw(idx: np.ndarray, val: np.ndarray, y: np.ndarray, path: Path) -> None:
    with open(path, "w") as fh:
        for r_idx, r_val, label in zip(
            idx[:, 1:].tolist(), val[:, 1:].tolist(), y.tolist(), strict=True
        ):
            feats = " ".join(f"{i}:{v:.7g}" for i, v in zip(r_idx, r_val, strict=True) if v)
            fh.write(f"{1 if label > 0 else -1} |f {feats}\n")


def run_vw(extra: str, data: Path, bits: int, tmp: Path) -> np.ndarray:
    from vowpalwabbit import pyvw

    preds = tmp / "preds.txt"
    vw = pyvw.Workspace(
        f"--data {data} -b {bits} --loss_function logistic --link logistic "
        f"-p {preds} --quiet --no_stdin {extra}"
    )
    vw.finish()
    return np.loadtxt(preds, usecols=0, ndmin=1)


def run_ours(prepared: Prepared, model: str, batch: int) -> np.ndarray:
    learner = create(model, prepared.spec)
    preds: list[np.ndarray] = []
    run(prepared, _Recorder(learner, preds), batch)  # type: ignore[arg-type]
    return np.concatenate(preds)


def ours_busy(prepared: Prepared, model: str, repeats: int) -> tuple[float, np.ndarray]:
    """Best examples/s over ``repeats`` runs as ``eval`` times them (busy seconds)."""
    best, p = 0.0, np.empty(0)
    for _ in range(repeats):
        learner = create(model, prepared.spec)
        preds: list[np.ndarray] = []
        gc.collect()
        _, busy = run(prepared, _Recorder(learner, preds), DEFAULT_BATCH_SIZE)  # type: ignore[arg-type]
        best = max(best, prepared.y.shape[0] / busy)
        p = np.concatenate(preds)
    return best, p


class _Recorder:
    """A learner that records what its inner learner predicted before each update."""

    def __init__(self, inner: Any, out: list[np.ndarray]) -> None:
        self.inner, self.out = inner, out
        self.featuriser = inner.featuriser

    def predict_learn_featurised(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> Any:
        p = self.inner.predict_learn_featurised(idx, val, y)
        self.out.append(p)
        return p


def ftrl_kernel(prepared: Prepared, idx: np.ndarray, val: np.ndarray, repeats: int) -> float:
    """Examples/s of ``ftrl`` at its defaults on rows already featurised (batch 1024)."""
    y = prepared.y

    def once() -> np.ndarray:
        learner = create("ftrl", prepared.spec)
        step = DEFAULT_BATCH_SIZE
        return np.concatenate(
            [
                learner.predict_learn_featurised(
                    idx[s : s + step], val[s : s + step], y[s : s + step]
                )
                for s in range(0, y.shape[0], step)
            ]
        )

    return timed(once, y.shape[0], repeats)[0]


# -- one stream ---------------------------------------------------------------------------
def bench(
    title: str, prepared: Prepared, tmp: Path, repeats: int, river_repeats: int, quick: bool
) -> dict[str, Any]:
    y = prepared.y
    n = y.shape[0]
    idx, val = featurise(prepared)
    ours_dicts = river_rows(idx, val)
    raw = raw_dicts(prepared)
    n_fm = min(n, RIVER_FM_ROWS)
    results: list[Result] = []
    for family, xs in (("river pipeline", raw), ("river, our features", ours_dicts)):
        for name, make in river_learners().items():
            if name == "FM":
                rows, reps = n_fm, 1
                label = f"river {name} (first {n_fm:,})"
            else:
                rows, reps, label = n, river_repeats, f"river {name}"

            def fit(
                make: Callable[[], Any] = make,
                xs: list[Any] = xs,
                rows: int = rows,
                family: str = family,
            ) -> Any:
                if family == "river pipeline":
                    return run_river(lambda: river_pipeline(make()), xs[:rows], y[:rows])
                return run_river(make, xs[:rows], y[:rows])

            eps, p = timed(fit, rows, reps)
            results.append(Result(label, family, rows, eps, p, reps))
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        data = Path(work) / "examples.vw"
        write_vw(idx, val, y, data)
        for label, extra in (("VW (plain)", ""), ("VW --ftrl", "--ftrl")):

            def vw(extra: str = extra, work: str = work) -> np.ndarray:
                return run_vw(extra, data, prepared.spec.hash_bits, Path(work))

            eps, p = timed(vw, n, repeats)
            results.append(Result(label, "vw", n, eps, p, repeats))
    for model in OURS:
        eps, p = ours_busy(prepared, model, repeats)
        results.append(Result(f"{model} (ours)", "ours", n, eps, p, repeats))
    batch_gaps: dict[str, dict[int, float]] = {}
    if not quick:
        for r in results[-len(OURS) :]:
            model = r.name.split()[0]
            batch_gaps[model] = {
                b: float(np.abs(run_ours(prepared, model, b) - r.p).max()) for b in (1000, 1)
            }
    kernel_eps = ftrl_kernel(prepared, idx, val, repeats)
    return report(title, prepared, results, batch_gaps, kernel_eps, n_fm)


def report(
    title: str,
    prepared: Prepared,
    results: list[Result],
    batch_gaps: dict[str, dict[int, float]],
    kernel_eps: float,
    n_fm: int,
) -> dict[str, Any]:
    y = prepared.y
    n = y.shape[0]
    rate = float(y.mean())
    constant = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    print(
        f"\n## {title}: {n:,} rows, positive rate {rate:.4f}, K={prepared.spec.n_slots} "
        f"slots, constant predictor log loss {constant:.4f}"
    )
    print(f"| learner | features | AUC | log loss | examples/s | AUC first {n_fm:,} |")
    print("|---|---|---:|---:|---:|---:|")
    rows: list[dict[str, Any]] = []
    for r in results:
        auc = exact_auc(y[: r.rows], r.p)
        head = exact_auc(y[:n_fm], r.p[:n_fm])
        ll = logloss(y[: r.rows], r.p)
        features = "river's own" if r.family == "river pipeline" else "ours (hashed)"
        timing = f"{r.examples_per_s:,.0f}" + ("" if r.runs > 1 else " (1 run)")
        print(f"| {r.name} | {features} | {auc:.4f} | {ll:.4f} | {timing} | {head:.4f} |")
        rows.append(
            {
                "learner": r.name,
                "family": r.family,
                "rows": r.rows,
                "auc": auc,
                "logloss": ll,
                "examples_per_s": r.examples_per_s,
                "auc_first": head,
            }
        )
    by = {(r["family"], r["learner"]): r for r in rows}

    def best(family: str, full_only: bool = True) -> dict[str, Any]:
        pool = [r for r in rows if r["family"] == family and (r["rows"] == n or not full_only)]
        return max(pool, key=lambda r: r["auc"])

    ours = best("ours")
    vw = best("vw")
    river_pipe = best("river pipeline")
    river_ours = best("river, our features")
    ftrl = by[("ours", "ftrl (ours)")]
    vw_eps = max(r["examples_per_s"] for r in rows if r["family"] == "vw")
    lr_pipe = by[("river pipeline", "river LR (SGD)")]["examples_per_s"]
    lr_ours = by[("river, our features", "river LR (SGD)")]["examples_per_s"]
    print(
        f"\nAUC: best of ours {ours['learner']} {ours['auc']:.4f}; best VW "
        f"{vw['auc']:.4f} ({ours['auc'] - vw['auc']:+.4f}); best river pipeline "
        f"{river_pipe['auc']:.4f} ({ours['auc'] - river_pipe['auc']:+.4f}); best river on "
        f"our features {river_ours['auc']:.4f} ({ours['auc'] - river_ours['auc']:+.4f})"
    )
    print(
        f"speed: ftrl {ftrl['examples_per_s']:,.0f}/s = "
        f"{ftrl['examples_per_s'] / vw_eps:.1f}x the faster VW, "
        f"{ftrl['examples_per_s'] / lr_pipe:.0f}x river LR (SGD) pipeline, "
        f"{ftrl['examples_per_s'] / lr_ours:.1f}x river LR (SGD) on our features; "
        f"the FTRL kernel alone on featurised rows {kernel_eps:,.0f}/s"
    )
    above = [r["learner"] for r in rows if r["family"] == "ours" and r["logloss"] >= constant]
    print(f"log loss of ours above the constant predictor's: {above or 'none'}")
    if batch_gaps:
        gaps = "; ".join(f"{m} {g[1000]:.1e} / {g[1]:.1e}" for m, g in batch_gaps.items())
        print(f"largest |Δp| against batch 1024 at batch 1000 / batch 1: {gaps}")
    return {
        "stream": title,
        "rows": n,
        "positive_rate": rate,
        "constant_logloss": constant,
        "slots": prepared.spec.n_slots,
        "learners": rows,
        "ftrl_kernel_examples_per_s": kernel_eps,
        "batch_gaps": batch_gaps,
    }


def kernel_first_call() -> float:
    """Seconds for the first call of every kernel in this process (numba cache load)."""
    from streamlearn.models.features import FeatureSpec

    spec = FeatureSpec(categorical=("a",), hash_bits=4)
    start = time.perf_counter()
    for name in OURS:
        learner = create(name, spec)
        idx, val = learner.featuriser.transform_many([{"a": "x"}] * 40)
        learner.predict_learn_featurised(idx, val, np.ones(40))
        learner.predict_featurised(idx, val)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 30k rows, one run each")
    parser.add_argument("--only", help="comma-separated stream names")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is kept)")
    parser.add_argument(
        "--river-repeats", type=int, help="timed runs of river's learners (default: --repeats)"
    )
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        import torch

        torch.set_num_threads(1)
    repeats = 1 if args.quick else args.repeats
    river_repeats = 1 if args.quick else (args.river_repeats or repeats)
    started = time.perf_counter()
    print(
        f"# streamlearn learner benchmark — {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPUs (pinned to {args.cpu if args.cpu is not None else 'none'}), "
        f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}, "
        f"best of {repeats} timed runs (river: {river_repeats})"
    )
    print(f"kernels' first call in this process: {kernel_first_call():.2f} s (left out below)")
    limit = 30_000 if args.quick else None
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        streams: list[tuple[str, Path, str, tuple[str, ...]]] = [
            (name, DATA / f"{name}.parquet", label, drop) for name, label, drop in TABLES
        ]
        obd = open_bandit(tmp)
        if obd is None:
            print(f"\n(Open Bandit sample skipped: no wheel at {OBP_WHEEL}; see the docstring)")
        else:
            streams.append(("open_bandit", obd, "click", ()))
        if not args.only or "simulator" in args.only.split(","):
            sim, shape = simulated(tmp, limit or SIM_ROWS)
            print(f"simulator log: {shape}")
            streams.append(("simulator", sim, "label", ()))
        for name, path, label, drop in streams:
            if args.only and name not in args.only.split(","):
                continue
            if limit:
                sliced = tmp / f"{name}.head.parquet"
                pq.write_table(pq.read_table(path).slice(0, limit), sliced)
                path = sliced
            prepared = prepare(EvalConfig(data=path, label=label, drop=drop))
            out.append(bench(name, prepared, tmp, repeats, river_repeats, args.quick))
            print(f"(load average now {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
