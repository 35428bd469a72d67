"""What both runtimes share: decode (bad → dead letters), apply, produce, commit state.

A runtime hands over the messages it consumed; ``BatchApplier`` decodes them, runs the
processor's batch function, produces its outputs and changelog records, waits for the
acknowledgements, then has the processor commit its state with the input offsets. A
batch that raises is retried record by record; a record that still raises is
dead-lettered with ``processing_error``.
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


@dataclass
class BatchApplier:
    """Runs one processor's micro-batches against one producer."""

    processor: BatchProcessor
    producer: Producer
    on_committed: OnCommitted | None = None
    stats: RuntimeStats = field(default_factory=RuntimeStats)

    def __post_init__(self) -> None:
        self._decoders = dict(self.processor.inputs())
        self._dlq = DeadLetters(self.producer)
        owned = getattr(self.processor, "dead_letter_inputs", None)
        self._owned: frozenset[str] | None = None if owned is None else frozenset(owned)

    @property
    def topics(self) -> list[str]:
        """The processor's input topics."""
        return list(self._decoders)

    def apply(self, msgs: Sequence[Message]) -> None:
        """Decode, apply and checkpoint one batch of data messages (errors filtered out)."""
        t0 = time.perf_counter()
        name = self.processor.name
        records: list[Record] = []
        append = records.append
        offsets: dict[TopicPartitionKey, int] = {}
        consumed: dict[str, int] = {}
        decoders = self._decoders
        for m in msgs:
            topic: str = m.topic()  # type: ignore[assignment]
            part: int = m.partition()  # type: ignore[assignment]
            off: int = m.offset()  # type: ignore[assignment]
            offsets[(topic, part)] = off + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            raw = m.value()
            try:
                value = decoders[topic](raw)
            except ContractError as exc:
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
        try:
            outputs = self.processor.process(records) if records else []
            outputs += self.processor.tick(time.time())
        except Exception:
            log.exception("processor=%s batch failed; retrying record by record", name)
            self.processor.discard()
            self._one_by_one(records, msgs, offsets)
            return
        if not offsets and not outputs:
            return
        self.checkpoint(outputs, offsets)
        self.stats.processed += len(records)
        count_by_topic(EVENTS_PROCESSED, name, (r.topic for r in records))
        self.stats.batches += 1
        BATCH_SECONDS.labels(name).observe(time.perf_counter() - t0)

    def _one_by_one(
        self,
        records: list[Record],
        msgs: Sequence[Message],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
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
        """A clean stop: the processor's last outputs (e.g. a final snapshot), committed."""
        try:
            outputs = self.processor.finish()
            if outputs:
                self.checkpoint(outputs, {})
        except Exception:
            log.exception("processor=%s final flush failed", self.processor.name)
