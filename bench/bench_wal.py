"""What RocksDB's write-ahead log costs the feature processor, and what the alternative
(rebuilding a store from its changelog after a crash) costs instead.

Not a test: ``python bench/bench_wal.py [--events 200000]``. Starts an embedded broker,
produces ~200-byte activity events into a 4-partition topic, then in this one run (these
machines are noisy, so only ratios mean much):

(a) the feature processor under the micro-batch runtime (1 s commit interval, as
    ``streamlearn up`` runs it), with each ``Durability``: no WAL (the baseline), WAL in
    the page cache, and WAL fsync'd at every commit (the default);
(b) the same with a commit after every batch of 2,000 (the worst case for the fsync);
(c) one store commit alone (5,000 entries of ~300 B, what a partition writes per second
    at ~50k events/s), per durability: the fsync's latency, free of the load noise of (a);
(d) rebuilding the four stores from the changelog that one run of (a) wrote, reading up to
    a fence (what a store without a WAL would have to do after every kill -9, since
    a rolled-back store cannot tell how far back it went; the embedded broker does not
    compact, so the changelog grows with every commit).

State lives on the real disk (``--state-dir``, default a temporary directory under the
working directory), since fsync is the point. Figures span first ``process`` to last
``commit`` (``bench_features.Timed``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import Result, Timed, produce_events

from streamlearn.project import load_project
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import KafkaCluster
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.state.restore import RestoreSource
from streamlearn.streams.state.store import Durability, PartitionStore

#: The built-in example project's parts.
CATALOG = load_project().catalog
MODEL_NAMES = load_project().model_catalog.names

log = logging.getLogger(__name__)


def run(
    kafka: KafkaConfig,
    topics: Topics,
    n: int,
    state: Path,
    durability: Durability,
    interval_s: float,
    tag: str,
) -> Result:
    proc = Timed(FeatureProcessor(topics, state, CATALOG, durability=durability))
    group = f"{topics.prefix}{tag}-{durability.value}-{interval_s}"
    rt = MicroBatchRuntime(proc, kafka, RuntimeConfig(group_id=group, commit_interval_s=interval_s))
    rt.run(max_seconds=120, max_events=n)
    name = (
        f"{durability.value:4} commit every {'batch' if interval_s == 0 else f'{interval_s:g} s'}"
    )
    return proc.result(name, rt.stats.consumed)


def restore_all(
    kafka: KafkaConfig, topics: Topics, partitions: int, root: Path
) -> tuple[float, int]:
    """Rebuild every partition's store from the features changelog; (seconds, records)."""
    source = RestoreSource(KafkaCluster(kafka))
    t0 = time.perf_counter()
    records = 0
    for p in range(partitions):
        store = PartitionStore(root / f"p{p:04d}", p)
        try:
            records += source.restore(topics.features, store).records
        finally:
            store.close()
    return time.perf_counter() - t0, records


def commit_latency(root: Path, durability: Durability, entries: int, reps: int) -> float:
    """Median seconds of one ``PartitionStore.commit`` of ``entries`` ~300-byte values."""
    store = PartitionStore(root / f"lat-{durability.value}", 0, durability)
    value = b"x" * 300
    times = []
    try:
        for r in range(reps):
            for i in range(entries):
                store.put(f"user/{r % 4}-{i:06d}", value)
            t0 = time.perf_counter()
            store.commit({"activity": (r + 1) * entries})
            times.append(time.perf_counter() - t0)
    finally:
        store.close()
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--state-dir", type=Path, default=None, help="on the disk to measure")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-wal-", dir=args.state_dir or Path.cwd()))
    configs = [
        (i, d) for i in (1.0, 0.0) for d in (Durability.NONE, Durability.WAL, Durability.SYNC)
    ]
    runs: dict[tuple[float, Durability], list[Result]] = {c: [] for c in configs}
    try:
        with EmbeddedBroker() as broker:
            kafka = KafkaConfig(broker.bootstrap_servers, "wal.", args.partitions)
            topics = Topics(kafka.topic_prefix)
            ensure_topics(kafka, topics.loop_topics(MODEL_NAMES))
            produce_events(kafka, topics.activity, args.events)
            for rep in range(args.repeat):  # interleaved, so load spikes hit every config
                for interval, d in configs:
                    tag = f"r{rep}"
                    state = tmp / f"{tag}-{d.value}-{interval}"
                    runs[(interval, d)].append(
                        run(kafka, topics, args.events, state, d, interval, tag)
                    )
            # (c) one default run's changelog, on a prefix of its own
            own = KafkaConfig(broker.bootstrap_servers, "wal-restore.", args.partitions)
            own_topics = Topics(own.topic_prefix)
            ensure_topics(own, own_topics.loop_topics(MODEL_NAMES))
            produce_events(own, own_topics.activity, args.events)
            default = run(own, own_topics, args.events, tmp / "own", Durability.SYNC, 1.0, "own")
            seconds, records = restore_all(own, own_topics, args.partitions, tmp / "restored")
        latency = {d: commit_latency(tmp, d, 5_000, 21) for d in Durability}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def median(rs: list[Result]) -> Result:
        return sorted(rs, key=lambda r: r.rate)[len(rs) // 2]

    print(
        f"\n| {'durability, commits':30} | {'events/s (median)':>17} | {'vs no WAL':>9} "
        f"| {'CPU µs/event':>12} | {'all runs, events/s':24} |"
    )
    print(f"|{'-' * 32}|{'-' * 19}|{'-' * 11}|{'-' * 14}|{'-' * 26}|")
    for interval, d in configs:
        r = median(runs[(interval, d)])
        base = median(runs[(interval, Durability.NONE)])
        every = ", ".join(f"{x.rate / 1000:.0f}k" for x in runs[(interval, d)])
        print(
            f"| {r.name:30} | {r.rate:>17,.0f} | {r.rate / base.rate:>9.3f} "
            f"| {r.cpu_us:>12.1f} | {every:24} |"
        )
    none = latency[Durability.NONE]
    print("\nOne commit of 5,000 entries (median of 21):")
    for d, sec in latency.items():
        extra = 4 * (sec - none)  # four partition stores commit each interval
        print(
            f"  {d.value:4}: {sec * 1000:6.1f} ms; at a 1 s interval over 4 partitions it adds "
            f"{extra * 1000:5.1f} ms per second ({100 * extra:.1f}% of the interval, in fsync)"
        )
    print(
        f"\nRestore from the changelog of one default run ({records:,} records, "
        f"{args.partitions} partitions): {seconds:.1f} s, {records / seconds:,.0f} records/s; "
        f"processing the same {default.events:,} events took {default.seconds:.1f} s."
    )


if __name__ == "__main__":
    main()
