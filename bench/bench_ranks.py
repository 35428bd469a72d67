"""Several trainer ranks against one: the sync's cost in AUC, its bytes, and throughput.

Not a test: ``python bench/bench_ranks.py [--rows 150000] [--examples 200000]
[--sync-every 4096]``. Two parts, in one run (the machine is shared: compare ratios):

(a) **the scheme, on the real tables and the simulator** (in this process, no transport):
    the three tables of ``/work/shared/data`` prepared exactly as ``streamlearn eval``
    prepares them, and the simulator's feed log (``feed_log.py``), each learned by FTRL
    at its defaults. One learner learns the stream in order; then ``N`` copies learn its
    shards — row ``i`` in "partition" ``i mod 4``, partition ``p`` to rank ``p mod N``,
    the ranks' static assignment — holding a round every ``--sync-every`` examples per
    rank with the very arithmetic the ranks run (``streamlearn.models.sync.SyncState``:
    the rows each touched, deltas summed, maxima taken). Reported: progressive AUC and
    log loss over every row against one learner's, and the bytes a sparse round moves to
    each rank (every rank's touched rows, 32 bytes each for FTRL) per round and per
    example.
(b) **the processes, end to end** (the simulator's feed log, ``--examples`` records in a
    4-partition topic of the embedded broker): ``streamlearn train --model feed`` with
    ``--ranks 1`` and ``--ranks 2`` at their defaults: examples/s (rank 0's
    ``streamlearn_trainer_examples_seen``, the model's count, scraped every 200 ms: the
    slope while it learns), CPU per example (every process of the trainer, from /proc),
    the lineage's progressive AUC and log loss (every version's predict-before-learn
    tally, as ``tests/integration/test_ranks.py`` reads them), and rank 0's bytes into
    the collectives per round (``streamlearn_trainer_sync_bytes_total`` / rounds). The
    ranks share the machine's cores with each other and the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from bench_trainer import cpu_seconds, env_for, learning_rate
from feed_log import cached_feed_examples

from streamlearn.models.evaluation import ScoreTally, VersionEvaluation
from streamlearn.models.metrics import exact_auc
from streamlearn.models.registry import FileRegistry
from streamlearn.models.sync import SyncState
from streamlearn.models.zoo import create
from streamlearn.offline import tables
from streamlearn.offline.prequential import EvalConfig, prepare
from streamlearn.stack.scrape import scrape, total, value
from streamlearn.streams.contracts import decode_example
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics
from streamlearn.streams.learning.rollout import ROLLOUT_FILE
from streamlearn.streams.learning.trainer import is_resume_point

DATA = Path(os.environ.get("STREAMLEARN_SHARED_DATA", "/work/shared/data"))
TABLES = (
    ("adult", "income", ()),
    ("kdd04_bio", "target", ()),
    ("womens_clothing_reviews", "Recommended IND", ("Rating", "Title", "Review Text")),
)
PARTITIONS = 4


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


# -- (a) the scheme ----------------------------------------------------------------------
def streams(rows: int, cache: Path) -> list[tuple[str, Any, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, spec, idx, val, y) of every stream."""
    out = []
    for name, label, drop in TABLES:
        prepared = prepare(EvalConfig(data=DATA / f"{name}.parquet", label=label, drop=drop))
        featuriser = create("ftrl", prepared.spec).featuriser
        idx, val = featuriser.transform_columns(
            prepared.table.num_rows, *tables.feature_columns(prepared.table, prepared.spec)
        )
        out.append((name, prepared.spec, idx, val, np.asarray(prepared.y, dtype=np.float64)))
    from streamlearn.project import load_project

    feed = load_project().model_catalog.get("feed")
    examples = [decode_example(r) for r in cached_feed_examples(rows, cache)]
    idx, val = feed.create().featuriser.transform_many([e.features for e in examples])
    y = np.array([e.label for e in examples], dtype=np.float64)
    out.append(("simulator", feed.spec, idx, val, y))
    return out


def scheme(spec: Any, idx: np.ndarray, val: np.ndarray, y: np.ndarray, world: int, every: int):  # type: ignore[no-untyped-def]
    """Progressive predictions of ``world`` ranks in rounds of ``every`` examples per rank,
    and the bytes each rank received per round (mean)."""
    learners = [create("ftrl", spec) for _ in range(world)]
    states = [SyncState(learner) for learner in learners]
    shard = np.arange(len(y)) % PARTITIONS % world
    rows = [np.flatnonzero(shard == r) for r in range(world)]
    at = [0] * world
    p = np.zeros(len(y))
    received: list[int] = []
    while any(at[r] < len(rows[r]) for r in range(world)):
        for r in range(world):
            sel = rows[r][at[r] : at[r] + every]
            if len(sel):
                states[r].touch(idx[sel], val[sel])
                p[sel] = learners[r].predict_learn_featurised(idx[sel], val[sel], y[sel])
            at[r] += every
        if world > 1:
            parts = [(s.touched(), s.rows(s.touched())) for s in states]
            received.append(sum(len(c) for c, _ in parts) * states[0].row_bytes)
            for s in states:
                s.apply_rows(parts)
    return p, (float(np.mean(received)) if received else 0.0)


def part_a(rows: int, every: int, cache: Path) -> list[dict[str, Any]]:
    out = []
    print(f"\n(a) the scheme: FTRL, rounds every {every:,} examples per rank")
    print(
        "| stream | rows | ranks | AUC | vs 1 rank | log loss | vs 1 rank "
        "| bytes/round/rank | bytes/example |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, spec, idx, val, y in streams(rows, cache):
        one, _ = scheme(spec, idx, val, y, 1, len(y))
        base_auc, base_ll = exact_auc(y, one) or 0.0, logloss(y, one)
        for world in (1, 2, 4):
            p, per_round = scheme(spec, idx, val, y, world, every) if world > 1 else (one, 0.0)
            auc, ll = exact_auc(y, p) or 0.0, logloss(y, p)
            per_example = per_round / (every * world) if world > 1 else 0.0
            row = {
                "stream": name,
                "rows": len(y),
                "ranks": world,
                "auc": auc,
                "logloss": ll,
                "bytes_per_round": per_round,
            }
            out.append(row)
            print(
                f"| {name} | {len(y):,} | {world} | {auc:.4f} | {auc - base_auc:+.4f} | "
                f"{ll:.4f} | {ll - base_ll:+.4f} | {per_round:,.0f} | {per_example:.1f} |",
                flush=True,
            )
    return out


# -- (b) the processes -------------------------------------------------------------------
def lineage_figures(registry: FileRegistry) -> tuple[float, float]:
    """The lineage's progressive AUC and log loss (every version's tally, merged)."""
    last = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
    raw = registry.read_file(last, ROLLOUT_FILE)
    assert raw is not None
    state = json.loads(raw)
    tally = ScoreTally.from_dict(state["progressive"])
    evaluation = VersionEvaluation.from_dict(state["evaluation"], keep=1 << 20)
    for version in evaluation.to_dict():
        tally.merge(evaluation.tally(int(version), "progressive"))
    return tally.auc or 0.0, tally.sum_loss / max(tally.count, 1)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in map(int, children):
        out += _tree(c)
    return out


def _cpu(pids: list[int]) -> float:
    got = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # gone meanwhile
            got += cpu_seconds(pid)
    return got


def run_ranks(kafka: KafkaConfig, n: int, ranks: int, tmp: Path, timeout: float) -> dict[str, Any]:
    data = tmp / f"ranks{ranks}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = open(data.with_suffix(".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamlearn", "train", "--model", "feed"),
            *("--data-dir", str(data), "--metrics-port", str(port), "--ranks", str(ranks)),
        ],
        env=env_for(kafka),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = time.monotonic()
    series: list[tuple[float, float]] = []
    first: tuple[float, float, float] | None = None
    last: tuple[float, float] | None = None
    seen = 0.0
    cpu_seen: dict[int, float] = {}
    try:
        while time.monotonic() - started < timeout:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise SystemExit(f"train --ranks {ranks} exited {proc.returncode}: {log.name}")
            for pid in _tree(proc.pid):  # keep the CPU of processes as they come
                cpu_seen[pid] = max(cpu_seen.get(pid, 0.0), _cpu([pid]))
            try:
                seen = value(scrape(port), "streamlearn_trainer_examples_seen") or 0.0
            except OSError:
                continue
            now = time.monotonic()
            if 0 < seen < n:
                series.append((now, seen))
            if seen > 0 and first is None:
                first = (now, seen, sum(cpu_seen.values()))
            if seen >= n:
                last = (now, sum(cpu_seen.values()))
                samples = scrape(port)
                rounds = total(samples, "streamlearn_trainer_sync_rounds_total")
                sent = total(samples, "streamlearn_trainer_sync_bytes_total")
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if first is None or last is None:
        raise SystemExit(f"train --ranks {ranks} learned {seen:.0f} of {n}: see {log.name}")
    rate = learning_rate(series, n - first[1], last[0] - first[0])
    registry = FileRegistry(data / "registry")
    final = registry.latest("feed")
    assert final is not None
    meta = final.metadata
    if not meta["examples_seen"] == sum(meta["offsets"].values()) == n:
        raise SystemExit(f"not exactly once with {ranks} ranks: {meta['examples_seen']}")
    auc, ll = lineage_figures(registry)
    return {
        "ranks": ranks,
        "examples_per_s": rate,
        "cpu_us": (last[1] - first[2]) / (n - first[1]) * 1e6,
        "auc": auc,
        "logloss": ll,
        "rounds": rounds,
        "bytes_per_round": sent / rounds if rounds else 0.0,
    }


def part_b(examples: int, cache: Path, timeout: float) -> list[dict[str, Any]]:
    raws = cached_feed_examples(examples, cache)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as d, EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, "bench.", partitions=PARTITIONS)
        topics = Topics(kafka.topic_prefix)
        ensure_loop_topics(kafka, topics, models=("feed",))
        topic = topics.training_examples("feed")
        producer = make_producer(kafka, **{"linger.ms": 50})
        for i, raw in enumerate(raws):
            produce(producer, topic, raw, f"u{i % 997}")
        flush(producer)
        print(f"\n(b) the processes: {len(raws):,} feed examples in {PARTITIONS} partitions")
        print(
            "| ranks | examples/s | vs 1 rank | CPU µs/example | AUC | log loss | rounds "
            "| bytes/round (rank 0) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for ranks in (1, 2):
            r = run_ranks(kafka, len(raws), ranks, Path(d), timeout)
            out.append(r)
            base = out[0]["examples_per_s"]
            print(
                f"| {ranks} | {r['examples_per_s']:,.0f} | {r['examples_per_s'] / base:.2f} | "
                f"{r['cpu_us']:.2f} | {r['auc']:.4f} | {r['logloss']:.4f} | "
                f"{r['rounds']:.0f} | {r['bytes_per_round']:,.0f} |",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rows", type=int, default=150_000, help="simulator rows in part (a)")
    ap.add_argument("--examples", type=int, default=200_000, help="feed examples in part (b)")
    ap.add_argument("--sync-every", type=int, default=4096)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--only", choices=("a", "b"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "streamlearn-bench")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(
        f"# bench_ranks — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    result: dict[str, Any] = {}
    if args.only != "b":
        result["scheme"] = part_a(args.rows, args.sync_every, args.cache)
    if args.only != "a":
        result["processes"] = part_b(args.examples, args.cache, args.timeout)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
