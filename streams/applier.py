"""What both runtimes share: decode (bad → dead letters), apply, produce, commit state.

A runtime hands over the messages it consumed; ``BatchApplier`` decodes them and runs the
processor's batch function. At a commit it produces the outputs and changelog records,
waits for the acknowledgements, then has the processor commit its state with the input
offsets. With ``commit_interval_s`` > 0 several consumed batches share one commit (like
Kafka Streams' ``commit.interval.ms``): an entity touched many times in the interval is
encoded, stored and emitted once, at the cost of up to that interval of output latency.

A batch that raises is retried record by record; a record that still raises is
dead-lettered with ``processing_error``. When earlier batches of the interval are not yet
committed, their state is dropped too and the consumer is rewound (``seek``) to the last
commit, and the whole interval is re-applied record by record.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message, Producer
from prometheus_client import Counter

from streams.errors import ContractError
from streams.kafka import DeadLetters, flush
from streams.metrics import (
    BATCH_SECONDS,
    EVENTS_IN,
    EVENTS_OUT,
    EVENTS_PROCESSED,
    INVALID_SKIPPED,
)
from streams.processor import BatchProcessor, Output, Record, TopicPartitionKey

log = logging.getLogger(__name__)


@dataclass
class RuntimeStats:
    """Counters of one runtime run, for tests and benchmarks."""

    consumed: int = 0
    processed: int = 0
    dead_lettered: int = 0
    produced: int = 0
    batches: int = 0


def count_by_topic(counter: Counter, processor: str, topics: Iterable[str | None]) -> None:
    """Increment a per-(processor, topic) counter once per topic, not once per record."""
    for topic, n in collections.Counter(topics).items():
        counter.labels(processor, topic or "?").inc(n)


OnCommitted = Callable[[dict[TopicPartitionKey, int]], None]


Seek = Callable[[dict[TopicPartitionKey, int]], None]


@dataclass
class BatchApplier:
    """Runs one processor's micro-batches against one producer."""

    processor: BatchProcessor
    producer: Producer
    on_committed: OnCommitted | None = None
    stats: RuntimeStats = field(default_factory=RuntimeStats)
    #: Seconds between commits (0: every batch). Needs ``seek`` when > 0.
    commit_interval_s: float = 0.0
    #: Commit earlier than the interval once this many records are uncommitted.
    max_uncommitted: int = 100_000
    seek: Seek | None = None

    def __post_init__(self) -> None:
        if self.commit_interval_s > 0 and self.seek is None:
            raise ValueError("a commit interval needs a seek callback to rewind on failure")
        self._decoders = dict(self.processor.inputs())
        self._dlq = DeadLetters(self.producer)
        owned = getattr(self.processor, "dead_letter_inputs", None)
        self._owned: frozenset[str] | None = None if owned is None else frozenset(owned)
        # The uncommitted interval: outputs, next offsets, first offsets, applied records.
        self._outputs: list[Output] = []
        self._offsets: dict[TopicPartitionKey, int] = {}
        self._starts: dict[TopicPartitionKey, int] = {}
        self._applied: dict[str, int] = {}
        self._last_commit = time.monotonic()
        # After a rewind: re-apply record by record up to these offsets.
        self._careful: dict[TopicPartitionKey, int] = {}

    @property
    def topics(self) -> list[str]:
        """The processor's input topics."""
        return list(self._decoders)

    def apply(self, msgs: Sequence[Message]) -> None:
        """Decode and apply one batch of data messages (errors filtered out); commit when
        the interval is due."""
        t0 = time.perf_counter()
        name = self.processor.name
        records: list[Record] = []
        append = records.append
        offsets: dict[TopicPartitionKey, int] = {}
        consumed: dict[str, int] = {}
        decoders = self._decoders
        careful = self._careful
        for m in msgs:
            topic: str = m.topic()  # type: ignore[assignment]
            part: int = m.partition()  # type: ignore[assignment]
            off: int = m.offset()  # type: ignore[assignment]
            if (topic, part) not in offsets:
                self._starts.setdefault((topic, part), off)
            offsets[(topic, part)] = off + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            raw = m.value()
            try:
                value = decoders[topic](raw)
            except ContractError as exc:
                if careful and off < careful.get((topic, part), -1):
                    continue  # dead-lettered before the rewind
                if self._owned is None or topic in self._owned:
                    self._dlq.send(m, exc.reason, str(exc))
                    self.stats.dead_lettered += 1
                else:
                    INVALID_SKIPPED.labels(name, topic).inc()
                continue
            append(Record(topic, part, off, m.key(), value, raw))
        self.stats.consumed += len(msgs)
        for topic, c in consumed.items():
            EVENTS_IN.labels(name, topic).inc(c)
        if careful:
            self._one_by_one(records, msgs, offsets)
            self._careful = {tp: end for tp, end in careful.items() if offsets.get(tp, -1) < end}
            return
        try:
            outputs = self.processor.process(records) if records else []
            outputs += self.processor.tick(time.time())
        except Exception:
            log.exception("processor=%s batch failed; retrying record by record", name)
            self.processor.discard()
            self._recover(records, msgs, offsets)
            return
        self._outputs += outputs
        self._offsets.update(offsets)
        for r in records:
            self._applied[r.topic] = self._applied.get(r.topic, 0) + 1
        BATCH_SECONDS.labels(name).observe(time.perf_counter() - t0)
        if (
            time.monotonic() - self._last_commit >= self.commit_interval_s
            or sum(self._applied.values()) >= self.max_uncommitted
        ):
            self.commit()

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions taken away (after ``commit``): stop tracking them."""
        for tp in partitions:
            self._careful.pop(tp, None)
            self._starts.pop(tp, None)

    def commit(self) -> None:
        """Commit the uncommitted interval now (also before a revoke and at a stop)."""
        if self._offsets or self._outputs:
            self.checkpoint(self._outputs, self._offsets)
            self.stats.batches += 1
        n = 0
        for topic, c in self._applied.items():
            EVENTS_PROCESSED.labels(self.processor.name, topic).inc(c)
            n += c
        self.stats.processed += n
        self._outputs, self._offsets, self._starts, self._applied = [], {}, {}, {}
        self._last_commit = time.monotonic()

    def _recover(
        self,
        records: list[Record],
        msgs: Sequence[Message],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        if not self._offsets:  # nothing earlier is uncommitted: retry just this batch
            self._starts = {}
            self._one_by_one(records, msgs, offsets)
            return
        # Earlier batches' state went with the discard: rewind to the last commit and
        # re-apply the whole interval record by record.
        assert self.seek is not None
        ends = {**self._offsets, **offsets}
        starts = dict(self._starts)
        log.warning(
            "processor=%s rewinding to %s to re-apply record by record", self.processor.name, starts
        )
        self._outputs, self._offsets, self._starts, self._applied = [], {}, {}, {}
        self._careful = ends
        self.seek(starts)

    def _one_by_one(
        self,
        records: list[Record],
        msgs: Sequence[Message],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        """Apply and commit each record alone; dead-letter the ones that raise."""
        by_coord = {(m.topic(), m.partition(), m.offset()): m for m in msgs}
        for r in records:
            try:
                outputs = self.processor.process([r])
            except Exception as exc:
                self.processor.discard()
                self._dlq.send(
                    by_coord[(r.topic, r.partition, r.offset)],
                    "processing_error",
                    f"{type(exc).__name__}: {exc}",
                )
                self.stats.dead_lettered += 1
                outputs = []
            else:
                self.stats.processed += 1
                EVENTS_PROCESSED.labels(self.processor.name, r.topic).inc()
            self.checkpoint(outputs, {(r.topic, r.partition): r.offset + 1})
        self.checkpoint([], offsets)
        self._starts = {}
        self._last_commit = time.monotonic()

    def checkpoint(self, outputs: list[Output], offsets: dict[TopicPartitionKey, int]) -> None:
        """Produce ``outputs`` + changelog, wait for acks, then commit state with offsets."""
        outputs = outputs + self.processor.prepare(offsets)
        producer = self.producer
        send = producer.produce
        per_topic: dict[str, int] = {}
        for o in outputs:
            per_topic[o.topic] = per_topic.get(o.topic, 0) + 1
            while True:
                try:
                    if o.partition is None:
                        send(o.topic, o.value, o.key)
                    else:
                        send(o.topic, o.value, o.key, partition=o.partition)
                    break
                except BufferError:
                    producer.poll(0.05)
        self.stats.produced += len(outputs)
        for topic, c in per_topic.items():
            EVENTS_OUT.labels(self.processor.name, topic).inc(c)
        flush(producer)
        self.processor.commit(offsets)
        if offsets and self.on_committed is not None:
            self.on_committed(offsets)

    def finish(self) -> None:
        """A clean stop: commit the interval, then the processor's last outputs."""
        try:
            self.commit()
            outputs = self.processor.finish()
            if outputs:
                self.checkpoint(outputs, {})
        except Exception:
            log.exception("processor=%s final flush failed", self.processor.name)
