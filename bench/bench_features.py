"""Throughput of the feature processor under both runtimes, against a raw consume loop.

Not a test: ``python bench/bench_features.py [--events 200000] [--faust-events 20000]``.
Starts an embedded broker, produces ~200-byte activity events into a 4-partition topic,
then measures in this one run (these machines are noisy, so only ratios mean much):

(a) raw: confluent-kafka ``consume(1000)`` + ``orjson.loads``, nothing else (the baseline);
(b) ``FeatureProcessor`` under ``MicroBatchRuntime`` (the default runtime);
(c) ``FeatureProcessor`` under ``FaustRuntime``, on fewer events (it is ~10x slower).

"events" are activity events. The feature processor updates a user aggregate and a
per-partition item partial for each, and produces one feature record per changed entity
per batch (plus the offsets record); all of that is in its figures.
Runtime timings span first ``process`` to last ``commit``, so the consumer-group join
(seconds on the embedded broker) is excluded. CPU is ``time.process_time`` of this
process (librdkafka threads included; the broker is another process).
Each run is bounded (raw 20 s, default runtime 80 s, faust 50 s; the whole script < 3 min):
a run cut short reports the events it got through.
Target: the default runtime processes >= 50,000 events/s on one core.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Message, TopicPartition

from streamlearn.project import load_project
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from streamlearn.streams.runtime.faust_adapter import FaustRuntime
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.runtime.processor import Decoder, Output, Record, TopicPartitionKey

#: The built-in example project's parts.
CATALOG = load_project().catalog
MODEL_NAMES = load_project().model_catalog.names

log = logging.getLogger(__name__)

KINDS = ("impression",) * 8 + ("click", "like", "hide", "share")


@dataclass
class Result:
    """One measured configuration."""

    name: str
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Events per second of wall time."""
        return self.events / self.seconds

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per event."""
        return 1e6 * self.cpu_seconds / self.events


class Timed:
    """Wraps a processor; records wall and CPU time from the first ``process`` call to
    the last ``commit`` (so group joins are not measured)."""

    def __init__(self, inner: FeatureProcessor) -> None:
        self.inner = inner
        self.name = inner.name
        self.dead_letter_inputs = inner.dead_letter_inputs
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] = (0.0, 0.0)

    def inputs(self) -> Mapping[str, Decoder]:
        return self.inner.inputs()

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return self.inner.assign(partitions)

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        self.inner.revoke(partitions)

    def process(self, records: list[Record]) -> list[Output]:
        if self.start is None:
            self.start = (time.perf_counter(), time.process_time())
        return self.inner.process(records)

    def tick(self, now: float) -> list[Output]:
        return self.inner.tick(now)

    def tally(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        self.inner.tally(counts)

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        return self.inner.prepare(offsets)

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self.inner.commit(offsets)
        self.end = (time.perf_counter(), time.process_time())

    def discard(self) -> None:
        self.inner.discard()

    def finish(self) -> list[Output]:
        return self.inner.finish()

    def close(self) -> None:
        self.inner.close()

    def result(self, name: str, events: int) -> Result:
        """The measured window as a ``Result``."""
        if self.start is None:
            raise RuntimeError(f"{name}: the processor never received a record")
        return Result(name, events, self.end[0] - self.start[0], self.end[1] - self.start[1])


def produce_events(kafka: KafkaConfig, topic: str, n: int, seed: int = 7) -> int:
    """Produce ``n`` activity events of ~200 bytes; return their mean size."""
    rng = random.Random(seed)
    producer = make_producer(kafka)
    size = 0
    for i in range(n):
        user = f"user-{rng.randrange(20_000):05d}"
        value = orjson.dumps(
            {
                "event_id": f"{uuid.UUID(int=rng.getrandbits(128)).hex}",
                "type": rng.choice(KINDS),
                "ts": 1_700_000_000.0 + i * 0.01,
                "user_id": user,
                "item_id": f"item-{rng.randrange(5_000):04d}",
                "surface": "feed" if i % 3 else "ads",
                "request_id": f"req-{i:09d}",
                "position": i % 20,
                "context": {"category": f"cat-{i % 11}"},
            }
        )
        size += len(value)
        produce(producer, topic, value, user)
    flush(producer, 60)
    return size // n


def bench_raw(kafka: KafkaConfig, topic: str, n: int) -> Result:
    """(a) consume(1000) + orjson.loads until ``n`` records are read."""
    c = Consumer(kafka.consumer_conf(f"raw-{uuid.uuid4().hex}"))
    c.assign([TopicPartition(topic, p, 0) for p in range(kafka.partitions)])
    # Wait for the first record before starting the clock (fetcher start-up).
    first: list[Message] = []
    while not first:
        first = [m for m in c.consume(1, 1.0) if m.error() is None]
    got = len(first)
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + 20
    while got < n and time.perf_counter() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                orjson.loads(m.value() or b"")
                got += 1
    t1, c1 = time.perf_counter(), time.process_time()
    c.close()
    return Result("raw consume(1000) + orjson", got - 1, t1 - t0, c1 - c0)


def bench_micro(kafka: KafkaConfig, topics: Topics, n: int, state: Path) -> Result:
    """(b) FeatureProcessor under MicroBatchRuntime over all ``n`` events."""
    proc = Timed(FeatureProcessor(topics, state, CATALOG))
    rt = MicroBatchRuntime(proc, kafka, RuntimeConfig(group_id=f"{topics.prefix}micro"))
    rt.run(max_seconds=80, max_events=n)
    if rt.stats.consumed < n:
        log.warning("micro-batch runtime consumed %d of %d records", rt.stats.consumed, n)
    return proc.result("FeatureProcessor, MicroBatchRuntime", rt.stats.consumed)


def bench_faust(kafka: KafkaConfig, topics: Topics, n: int, state: Path) -> Result:
    """(c) FeatureProcessor under FaustRuntime over ``n`` events."""
    proc = Timed(FeatureProcessor(topics, state, CATALOG))
    rt = FaustRuntime(proc, kafka, f"{topics.prefix}faust")
    rt.run(max_seconds=50, max_events=n)
    if rt.stats.consumed < n:
        log.warning("faust runtime consumed %d of %d records", rt.stats.consumed, n)
    return proc.result("FeatureProcessor, FaustRuntime", rt.stats.consumed)


def main() -> None:
    """Parse arguments, run the three measurements, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="events for (a) and (b)")
    ap.add_argument("--faust-events", type=int, default=20_000, help="events for (c)")
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        big = KafkaConfig(broker.bootstrap_servers, "bench.", partitions=args.partitions)
        small = KafkaConfig(broker.bootstrap_servers, "bench-faust.", partitions=args.partitions)
        big_topics, small_topics = Topics(big.topic_prefix), Topics(small.topic_prefix)
        ensure_topics(big, big_topics.loop_topics(MODEL_NAMES))
        ensure_topics(small, small_topics.loop_topics(MODEL_NAMES))
        t0 = time.perf_counter()
        size = produce_events(big, big_topics.activity, args.events)
        produce_events(small, small_topics.activity, args.faust_events)
        print(
            f"produced {args.events} + {args.faust_events} events of ~{size} B "
            f"in {time.perf_counter() - t0:.1f}s; {args.partitions} partitions"
        )

        raw = bench_raw(big, big_topics.activity, args.events)
        results = [
            raw,
            bench_micro(big, big_topics, args.events, Path(tmp) / "micro"),
            bench_faust(small, small_topics, args.faust_events, Path(tmp) / "faust"),
        ]

    print(
        f"\n| {'runtime':38} | {'events':>7} | {'events/s':>9} | {'vs raw':>7} "
        f"| {'CPU µs/event':>12} |"
    )
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 14}|")
    for r in results:
        print(
            f"| {r.name:38} | {r.events:>7} | {r.rate:>9,.0f} | {r.rate / raw.rate:>7.3f} "
            f"| {r.cpu_us:>12.1f} |"
        )
    micro = results[1]
    verdict = "meets" if micro.rate >= 50_000 else "is below"
    print(
        f"\nThe default runtime {verdict} the design target of 50,000 events/s ({micro.rate:,.0f})."
    )


if __name__ == "__main__":
    main()
