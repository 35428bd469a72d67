"""Learner benchmark on real tables and the simulator, against river and Vowpal Wabbit.

Run: ``python bench/bench_learners.py`` (about 10 minutes on 2 cores; ``--quick`` caps
every stream at 30k rows). For every stream it prints one table: river
LogisticRegression (SGD and AdaGrad), river FMClassifier, Vowpal Wabbit (plain, i.e.
adaptive + normalized + invariant, and ``--ftrl``) and each of ours at the defaults of
``streamlearn eval`` — progressive AUC, log loss (and the constant predictor's), and
examples/s — plus ``ftrl``/``fm`` at batch 1 to show the batch size changes nothing.

Streams (row order as given; none has a time column):

* ``adult``, ``kdd04_bio``, ``womens_clothing_reviews`` from ``../shared/data`` (see its
  README; the clothing table without its leaking ``Rating``/``Title``/``Review Text``),
  prepared exactly as ``streamlearn eval --data T --label L`` prepares them;
* the Open Bandit Dataset sample (ZOZOTOWN, CC BY 4.0), read from the ``obp==0.4.1``
  wheel: ``pip download --no-deps obp==0.4.1 -d /tmp/obp`` (or set ``OBP_WHEEL``);
  skipped, and said so, when the wheel is absent;
* the simulator's world (:class:`simulator.World`): users drawn by activity, items shown
  at random positions, clicks drawn from the world's true CTR.

What each timing includes:

* ours: featurising the Arrow columns (:meth:`Featuriser.transform_columns`), predicting
  and learning, as ``eval`` does; reading the file is left out. The compiled kernels are
  loaded before the clock starts (their first-call cost is printed once at the top);
* Vowpal Wabbit: parsing its own text file (the same hashed ``idx:val`` features,
  written beforehand, untimed) and learning, one pass, progressive predictions to a file;
* river: ``predict_proba_one`` + ``learn_one`` on prebuilt ``{idx: val}`` dicts (their
  featurisation is left out, which favours river). river FM runs at ~2-4k examples/s, so
  it sees the first :data:`RIVER_FM_ROWS` rows only; the column "AUC first N" compares
  every learner on those rows.

The machine is shared: compare ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.metrics import exact_auc
from models.zoo import create
from offline import tables
from offline.prequential import (
    COMPARED_LEARNERS,
    DEFAULT_BATCH_SIZE,
    EvalConfig,
    Prepared,
    prepare,
    run,
)

DATA = Path(
    os.environ.get("STREAMLEARN_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)
OBP_WHEEL = Path(os.environ.get("OBP_WHEEL", "/tmp/obp/obp-0.4.1-py3-none-any.whl"))
RIVER_FM_ROWS = 10_000
SIM_ROWS = 150_000
TABLES = (
    ("adult", "income", ()),
    ("kdd04_bio", "target", ()),
    ("womens_clothing_reviews", "Recommended IND", ("Rating", "Title", "Review Text")),
)


@dataclass
class Result:
    """One learner on one stream."""

    name: str
    rows: int
    examples_per_s: float
    p: np.ndarray


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


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


def simulated(tmp: Path, n: int, seed: int = 0) -> Path:
    """Impressions from the simulator's world under a random ranking, as a Parquet file."""
    from simulator import World

    world = World(seed=seed)
    rng = np.random.default_rng(seed + 1)
    rows: list[dict[str, Any]] = []
    per_request, t = 10, 0.0
    while len(rows) < n:
        t += 0.01
        world.advance_to(t)
        user = world.sample_user(rng)
        items = world.sample_candidates(rng, per_request)
        positions = np.arange(items.shape[0])
        clicks = rng.random(items.shape[0]) < world.true_ctr(user, items, positions)
        for slot, pos, click in zip(
            items.tolist(), positions.tolist(), clicks.tolist(), strict=True
        ):
            rows.append(
                {
                    "user_id": world.user_ids[user],
                    "item_id": world.item_ids[slot],
                    "item_category": world.category_name(slot),
                    "position": pos,
                    "label": int(click),
                }
            )
    path = tmp / "simulator.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:n]), path)
    return path


# -- baselines ----------------------------------------------------------------------------
def encode(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    featuriser = create("ftrl", prepared.spec).featuriser
    return featuriser.transform_columns(
        prepared.table.num_rows, *tables.feature_columns(prepared.table, prepared.spec)
    )


def river_dicts(idx: np.ndarray, val: np.ndarray) -> list[dict[int, float]]:
    out = []
    for r_idx, r_val in zip(idx[:, 1:].tolist(), val[:, 1:].tolist(), strict=True):
        x: dict[int, float] = {}
        for i, v in zip(r_idx, r_val, strict=True):
            if v != 0.0:
                x[i] = x.get(i, 0.0) + v
        out.append(x)
    return out


def run_river(name: str, model: Any, xs: list[dict[int, float]], y: np.ndarray) -> Result:
    labels = (y > 0).tolist()
    p = np.empty(len(xs))
    start = time.perf_counter()
    for r, (x, label) in enumerate(zip(xs, labels, strict=True)):
        p[r] = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, label)
    return Result(name, len(xs), len(xs) / (time.perf_counter() - start), p)


def run_vw(
    name: str, extra: str, idx: np.ndarray, val: np.ndarray, y: np.ndarray, bits: int, tmp: Path
) -> Result:
    from vowpalwabbit import pyvw

    data, preds = tmp / "examples.vw", tmp / "preds.txt"
    if not data.exists():
        with open(data, "w") as fh:
            for r_idx, r_val, label in zip(
                idx[:, 1:].tolist(), val[:, 1:].tolist(), y.tolist(), strict=True
            ):
                feats = " ".join(f"{i}:{v:.7g}" for i, v in zip(r_idx, r_val, strict=True) if v)
                fh.write(f"{1 if label > 0 else -1} |f {feats}\n")
    args = (
        f"--data {data} -b {bits} --loss_function logistic --link logistic "
        f"-p {preds} --quiet --no_stdin {extra}"
    )
    start = time.perf_counter()
    vw = pyvw.Workspace(args)
    vw.finish()
    elapsed = time.perf_counter() - start
    return Result(name, len(y), len(y) / elapsed, np.loadtxt(preds, usecols=0))


def ours(prepared: Prepared, model: str, batch: int) -> Result:
    learner = create(model, prepared.spec)
    gc.collect()
    preds: list[np.ndarray] = []
    _, busy = run(prepared, _Recorder(learner, preds), batch)  # type: ignore[arg-type]
    label = f"{model} (ours, batch {batch})"
    return Result(label, prepared.y.shape[0], prepared.y.shape[0] / busy, np.concatenate(preds))


class _Recorder:
    """A learner that records what its inner learner predicted before each update."""

    def __init__(self, inner: Any, out: list[np.ndarray]) -> None:
        self.inner, self.out = inner, out
        self.featuriser = inner.featuriser

    def predict_learn_encoded(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> Any:
        p = self.inner.predict_learn_encoded(idx, val, y)
        self.out.append(p)
        return p


# -- one stream ---------------------------------------------------------------------------
def bench(title: str, prepared: Prepared, tmp: Path, quick: bool) -> list[dict[str, Any]]:
    from river import facto, linear_model, optim

    y = prepared.y
    n = y.shape[0]
    idx, val = encode(prepared)
    xs = river_dicts(idx, val)
    n_fm = min(n, RIVER_FM_ROWS)
    results = [
        run_river("river LR (SGD)", linear_model.LogisticRegression(optim.SGD(0.01)), xs, y),
        run_river("river LR (AdaGrad)", linear_model.LogisticRegression(optim.AdaGrad()), xs, y),
        run_river(
            f"river FM (first {n_fm:,})",
            facto.FMClassifier(n_factors=8, seed=0),
            xs[:n_fm],
            y[:n_fm],
        ),
    ]
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        bits = prepared.spec.hash_bits
        results.append(run_vw("VW (plain)", "", idx, val, y, bits, Path(work)))
        results.append(run_vw("VW --ftrl", "--ftrl", idx, val, y, bits, Path(work)))
    for model in COMPARED_LEARNERS:
        results.append(ours(prepared, model, DEFAULT_BATCH_SIZE))
    if not quick:
        for model in ("ftrl", "fm"):
            results.append(ours(prepared, model, 1))
    rate = float(y.mean())
    constant = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    print(
        f"\n## {title}: {n:,} rows, positive rate {rate:.4f}, K={prepared.spec.n_slots}, "
        f"constant predictor log loss {constant:.4f}"
    )
    river_lr = results[0].examples_per_s
    vw = max(r.examples_per_s for r in results if r.name.startswith("VW"))
    print(f"| learner | AUC | log loss | examples/s | × river LR | × VW | AUC first {n_fm:,} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for r in results:
        auc = exact_auc(y[: r.rows], r.p)
        head = exact_auc(y[:n_fm], r.p[:n_fm])
        ll = logloss(y[: r.rows], r.p)
        print(
            f"| {r.name} | {auc:.4f} | {ll:.4f} | {r.examples_per_s:,.0f} | "
            f"{r.examples_per_s / river_lr:.1f} | {r.examples_per_s / vw:.2f} | {head:.4f} |"
        )
        rows.append({"learner": r.name, "auc": auc, "logloss": ll, "eps": r.examples_per_s})
    return rows


def kernel_first_call() -> float:
    """Seconds for the first ftrl+fm call of this process (numba cache load)."""
    from models.features import FeatureSpec

    spec = FeatureSpec(categorical=("a",), hash_bits=4)
    start = time.perf_counter()
    for name in ("ftrl", "fm"):
        learner = create(name, spec)
        idx, val = learner.featuriser.transform_many([{"a": "x"}])
        learner.predict_learn_encoded(idx, val, np.ones(1))
        learner.predict_encoded(idx, val)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 30k rows per stream")
    parser.add_argument("--only", help="comma-separated stream names")
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"# streamlearn learner benchmark — {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    print(f"kernels' first call in this process: {kernel_first_call():.2f} s (left out below)")
    limit = 30_000 if args.quick else None
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
        streams.append(("simulator", simulated(tmp, limit or SIM_ROWS), "label", ()))
        for name, path, label, drop in streams:
            if args.only and name not in args.only.split(","):
                continue
            if limit:
                sliced = tmp / f"{name}.head.parquet"
                pq.write_table(pq.read_table(path).slice(0, limit), sliced)
                path = sliced
            prepared = prepare(EvalConfig(data=path, label=label, drop=drop))
            bench(name, prepared, tmp, args.quick)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
