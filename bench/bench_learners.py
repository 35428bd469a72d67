"""Learner benchmark: throughput and progressive quality, against river and Vowpal Wabbit.

Run: ``python bench/bench_learners.py`` (about 2 minutes on 2 cores). Prints one table
per dataset (learner, examples/s, ratio to river LogisticRegression, ratio to Vowpal
Wabbit, progressive AUC, log loss) and a memory check (1M distinct user ids).

Every learner sees the same featurised examples (``Featuriser``, 2**20 hashed space) in
time order and predicts each batch before learning it; throughput is predict+learn on
encoded batches. Vowpal Wabbit reads the same hashed examples from its native text
format (``idx:val`` features, logistic loss, progressive predictions via ``-p``); its
time includes parsing that file. The river learners run through the river adapter
(their own dict input, one example at a time).

Datasets: a synthetic CTR stream, and the Open Bandit Dataset sample (ZOZOTOWN,
CC BY 4.0) read from the ``obp==0.4.1`` wheel if it was downloaded:
``pip download --no-deps obp==0.4.1 -d /tmp/obp`` (or set ``OBP_WHEEL``).
"""

from __future__ import annotations

import csv
import gc
import io
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.features import FeatureSpec, Featuriser, hash_cache_size
from models.learners.river_adapter import RiverLearner
from models.metrics import exact_auc
from models.protocol import Learner
from models.zoo import create

HASH_BITS = 20
SYNTH_N = 300_000
RIVER_LR_MAX = 60_000
RIVER_FM_MAX = 20_000  # river FM runs at ~1-4k examples/s: capped to bound run time
OBP_WHEEL = Path(os.environ.get("OBP_WHEEL", "/tmp/obp/obp-0.4.1-py3-none-any.whl"))


# -- data -------------------------------------------------------------------------------
def synthetic(n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """CTR-like stream: long-tail users and items, position bias, a user×item effect."""
    rng = np.random.default_rng(seed)
    users = np.minimum(rng.zipf(1.3, n), 200_000)
    items = np.minimum(rng.zipf(1.2, n), 5_000)
    position = rng.integers(0, 10, n)
    surface = rng.integers(0, 2, n)
    user_eff = rng.normal(0, 0.6, 200_001)
    item_eff = rng.normal(0, 0.8, 5_001)
    taste = rng.normal(0, 1.0, (200_001 % 97 + 97, 3))
    style = rng.normal(0, 1.0, (5_001 % 89 + 89, 3))
    inter = (taste[users % len(taste)] * style[items % len(style)]).sum(1) * 0.5
    logit = -3.2 + user_eff[users] + item_eff[items] - 0.15 * position + 0.3 * surface + inter
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    rows = [
        {"user": f"u{u}", "item": f"i{i}", "surface": "ads" if s else "feed", "position": int(p)}
        for u, i, s, p in zip(users, items, surface, position, strict=True)
    ]
    return rows, y


SYNTH_SPEC = FeatureSpec(
    categorical=("user", "item", "surface"),
    numeric=("position",),
    crosses=(("user", "item"),),
    hash_bits=HASH_BITS,
)


def open_bandit() -> tuple[list[dict[str, Any]], np.ndarray] | None:
    """The OBD sample (random + bts policies, all campaigns), in timestamp order."""
    if not OBP_WHEEL.is_file():
        return None
    records: list[dict[str, str]] = []
    with zipfile.ZipFile(OBP_WHEEL) as wheel:
        for policy in ("random", "bts"):
            text = wheel.read(f"obp/dataset/obd/{policy}/all/all.csv").decode()
            records += list(csv.DictReader(io.StringIO(text)))
    records.sort(key=lambda r: r["timestamp"])
    rows = [
        {
            "item": r["item_id"],
            "position": r["position"],
            **{f"uf{k}": r[f"user_feature_{k}"] for k in range(4)},
            "affinity": float(r[f"user-item_affinity_{r['item_id']}"]),
        }
        for r in records
    ]
    return rows, np.array([float(r["click"]) for r in records])


OBD_SPEC = FeatureSpec(
    categorical=("item", "position", "uf0", "uf1", "uf2", "uf3"),
    numeric=("affinity",),
    crosses=(
        ("item", "position"),
        ("item", "uf0"),
        ("item", "uf1"),
        ("item", "uf2"),
        ("item", "uf3"),
    ),
    hash_bits=HASH_BITS,
)


# -- runners -----------------------------------------------------------------------------
def run(
    learner: Learner, idx: np.ndarray, val: np.ndarray, y: np.ndarray, batch: int
) -> tuple[float, np.ndarray]:
    """Progressive predict+learn; returns (examples/s, predictions)."""
    preds = []
    start = time.perf_counter()
    for s in range(0, len(y), batch):
        preds.append(
            learner.predict_learn_encoded(idx[s : s + batch], val[s : s + batch], y[s : s + batch])
        )
    return len(y) / (time.perf_counter() - start), np.concatenate(preds)


def run_vw(
    idx: np.ndarray, val: np.ndarray, y: np.ndarray, workdir: Path
) -> tuple[float, np.ndarray]:
    """Vowpal Wabbit on the same hashed examples, native text input, progressive preds."""
    from vowpalwabbit import pyvw

    data, preds = workdir / "examples.vw", workdir / "preds.txt"
    with open(data, "w") as fh:
        for r_idx, r_val, label in zip(
            idx[:, 1:].tolist(), val[:, 1:].tolist(), y.tolist(), strict=True
        ):
            feats = " ".join(f"{i}:{v:.7g}" for i, v in zip(r_idx, r_val, strict=True) if v)
            fh.write(f"{1 if label > 0 else -1} |f {feats}\n")
    args = (
        f"--data {data} -b {HASH_BITS} --loss_function logistic --link logistic "
        f"-p {preds} --quiet --no_stdin"
    )
    start = time.perf_counter()
    vw = pyvw.Workspace(args)
    vw.finish()
    elapsed = time.perf_counter() - start
    return len(y) / elapsed, np.loadtxt(preds, usecols=0)


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def bench(name: str, rows: Sequence[dict[str, Any]], y: np.ndarray, spec: FeatureSpec) -> None:
    t = time.perf_counter()
    idx, val = Featuriser(spec).transform_many(rows)
    feat_rate = len(rows) / (time.perf_counter() - t)
    print(
        f"\n## {name}: {len(y):,} examples, CTR {y.mean():.4f}, K={spec.n_slots}, "
        f"featurisation {feat_rate:,.0f} rows/s (not in the figures below)"
    )
    results: list[tuple[str, int, float, np.ndarray]] = []
    n_lr = min(len(y), RIVER_LR_MAX)
    eps, p = run(create("river-lr", spec), idx[:n_lr], val[:n_lr], y[:n_lr], 1000)
    results.append(("river LogisticRegression", n_lr, eps, p))
    with tempfile.TemporaryDirectory() as tmp:
        eps, p = run_vw(idx, val, y, Path(tmp))
    results.append(("Vowpal Wabbit (native file)", len(y), eps, p))
    n_fm = min(len(y), RIVER_FM_MAX)
    fm = RiverLearner(spec, "facto.FMClassifier", seed=0, n_factors=8)
    eps, p = run(fm, idx[:n_fm], val[:n_fm], y[:n_fm], 1000)
    results.append(("river FMClassifier", n_fm, eps, p))
    for label, learner, batch in (
        ("ftrl (numpy), batch 1000", create("ftrl", spec), 1000),
        ("ftrl (numpy), batch 256", create("ftrl", spec), 256),
        ("ftrl, ads head (negatives 0.25)", create("ftrl", spec, negative_rate=0.25), 1000),
        ("fm (torch), batch 1000", create("fm", spec, num_threads=1), 1000),
        ("deep (torch), batch 256", create("deep", spec, num_threads=1), 256),
    ):
        gc.collect()
        eps, p = run(learner, idx, val, y, batch)
        results.append((label, len(y), eps, p))
    river_eps, vw_eps = results[0][2], results[1][2]
    print(
        f"| learner | examples | examples/s | × river LR | × VW | AUC | log loss | "
        f"AUC on first {n_fm:,} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, n, eps, p in results:
        auc = exact_auc(y[:n], p)
        head = exact_auc(y[:n_fm], p[:n_fm])
        print(
            f"| {label} | {n:,} | {eps:,.0f} | {eps / river_eps:.2f} | {eps / vw_eps:.2f} | "
            f"{auc:.4f} | {logloss(y[:n], p):.4f} | {head:.4f} |"
        )


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_bench(n: int = 1_000_000, chunk: int = 10_000) -> None:
    """1M distinct user ids through featuriser + FTRL: resident memory stays flat."""
    learner = create("ftrl", SYNTH_SPEC)
    rng = np.random.default_rng(1)
    print(f"\n## memory: {n:,} examples, every one a new user id (FTRL, 2**{HASH_BITS})")
    print("| examples | RSS MiB | hash cache entries |")
    print("|---:|---:|---:|")
    baseline = None
    for start in range(0, n, chunk):
        rows = [
            {
                "user": f"user-{start + i}",
                "item": f"i{rng.integers(1000)}",
                "surface": "feed",
                "position": int(rng.integers(10)),
            }
            for i in range(chunk)
        ]
        idx, val = learner.featuriser.transform_many(rows)
        learner.learn_encoded(idx, val, (rng.random(chunk) < 0.05).astype(np.float64))
        done = start + chunk
        if done == 100_000 or done % 250_000 == 0:
            rss = rss_mib()
            baseline = baseline or rss
            print(f"| {done:,} | {rss:.1f} | {hash_cache_size():,} |")
    print(f"growth from 100k to {n:,} examples: {rss_mib() - (baseline or 0):+.1f} MiB")


def main() -> None:
    started = time.perf_counter()
    print(
        f"# streamlearn learner benchmark — {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    bench("synthetic CTR", *synthetic(SYNTH_N, seed=0), SYNTH_SPEC)
    obd = open_bandit()
    if obd is None:
        print(f"\n(Open Bandit sample skipped: no wheel at {OBP_WHEEL})")
    else:
        bench("Open Bandit Dataset sample (random+bts, all), time order", *obd, OBD_SPEC)
    memory_bench()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
