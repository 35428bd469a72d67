"""The micro-batch runtime: runs a ``BatchProcessor`` on confluent-kafka.

Per batch: consume up to ``batch_size`` records, decode them (a bad record goes to its
dead-letter topic), apply the batch function, produce its outputs and changelog records,
wait for acknowledgements, then write state and input offsets in one RocksDB
``WriteBatch`` and commit the offsets to Kafka (informational: lag, tooling).

Guarantee: state updates are exactly-once with respect to the input (state and offsets
are written atomically and a restart resumes from the stored offsets); outputs are
at-least-once (a crash between producing and committing re-emits the batch's outputs).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from prometheus_client import Counter

from streams.config import KafkaConfig
from streams.errors import ContractError
from streams.kafka import DeadLetters, check, flush, make_consumer, make_producer
from streams.metrics import (
    BATCH_SECONDS,
    CONSUMER_LAG,
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
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime polls."""

    group_id: str
    batch_size: int = 2000
    poll_timeout_s: float = 0.1
    lag_interval_s: float = 5.0


def _count(counter: Counter, processor: str, topics: Iterable[str | None]) -> None:
    """Increment a per-(processor, topic) counter once per topic, not once per record."""
    for topic, n in collections.Counter(topics).items():
        counter.labels(processor, topic or "?").inc(n)


class MicroBatchRuntime:
    """Consume → apply → produce → commit, one micro-batch at a time."""

    def __init__(
        self,
        processor: BatchProcessor,
        kafka: KafkaConfig,
        config: RuntimeConfig,
        producer: Producer | None = None,
    ) -> None:
        self.processor = processor
        self.kafka = kafka
        self.config = config
        self.stats = RuntimeStats()
        self._decoders = dict(processor.inputs())
        self._producer = producer or make_producer(kafka)
        self._dlq = DeadLetters(self._producer)
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._next_lag = 0.0

    def _owns_dlq(self, topic: str) -> bool:
        owned = getattr(self.processor, "dead_letter_inputs", None)
        return owned is None or topic in owned

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stop.set()

    # -- rebalance callbacks -------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        starts = self.processor.assign(keys)
        for tp in partitions:
            start = starts.get((tp.topic, tp.partition))
            if start is not None:
                tp.offset = start
        log.info(
            "processor=%s assigned %s",
            self.processor.name,
            ", ".join(
                f"topic={t} partition={p} offset={starts.get((t, p), 'committed')}" for t, p in keys
            ),
        )
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.processor.revoke([(tp.topic, tp.partition) for tp in partitions])

    # -- the loop ------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None, max_events: int | None = None) -> RuntimeStats:
        """Run until ``stop()``, ``max_seconds`` elapse, or ``max_events`` are consumed."""
        consumer = make_consumer(self.kafka, self.config.group_id)
        self._consumer = consumer
        consumer.subscribe(
            list(self._decoders), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if max_events is not None and self.stats.consumed >= max_events:
                    break
                msgs = consumer.consume(self.config.batch_size, self.config.poll_timeout_s)
                self._handle(msgs)
                self._report_lag(consumer)
        finally:
            self._shutdown(consumer)
        return self.stats

    def _handle(self, msgs: list[Message]) -> None:
        t0 = time.perf_counter()
        records: list[Record] = []
        offsets: dict[TopicPartitionKey, int] = {}
        consumed: dict[str, int] = {}
        decoders = self._decoders
        append = records.append
        for m in msgs:
            if m.error() is not None and not check(m):
                continue
            topic: str = m.topic()  # type: ignore[assignment]
            part: int = m.partition()  # type: ignore[assignment]
            off: int = m.offset()  # type: ignore[assignment]
            offsets[(topic, part)] = off + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            raw = m.value()
            try:
                value = decoders[topic](raw)
            except ContractError as exc:
                if self._owns_dlq(topic):
                    self._dlq.send(m, exc.reason, str(exc))
                    self.stats.dead_lettered += 1
                else:
                    INVALID_SKIPPED.labels(self.processor.name, topic).inc()
                continue
            append(Record(topic, part, off, m.key(), value, raw))
        n = sum(consumed.values())
        self.stats.consumed += n
        for topic, c in consumed.items():
            EVENTS_IN.labels(self.processor.name, topic).inc(c)
        try:
            outputs = self.processor.process(records) if records else []
            outputs += self.processor.tick(time.time())
        except Exception:
            log.exception(
                "processor=%s batch failed; retrying record by record", self.processor.name
            )
            self.processor.discard()
            self._one_by_one(records, msgs, offsets)
            return
        if not offsets and not outputs:
            return
        self._checkpoint(outputs, offsets)
        self.stats.processed += len(records)
        _count(EVENTS_PROCESSED, self.processor.name, (r.topic for r in records))
        self.stats.batches += 1
        BATCH_SECONDS.labels(self.processor.name).observe(time.perf_counter() - t0)

    def _one_by_one(
        self,
        records: list[Record],
        msgs: list[Message],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        by_coord = {(m.topic(), m.partition(), m.offset()): m for m in msgs if m.error() is None}
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
            self._checkpoint(outputs, {(r.topic, r.partition): r.offset + 1})
        self._checkpoint([], offsets)

    def _checkpoint(self, outputs: list[Output], offsets: dict[TopicPartitionKey, int]) -> None:
        outputs = outputs + self.processor.prepare(offsets)
        producer = self._producer
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
        if offsets and self._consumer is not None:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )

    def _report_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + self.config.lag_interval_s
        lag: dict[str, int] = {}
        try:
            for tp in consumer.position(consumer.assignment()):
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - tp.offset)
        except Exception as exc:  # lag is best effort, never fatal
            log.debug("lag unavailable: %s", exc)
            return
        for topic, n in lag.items():
            CONSUMER_LAG.labels(self.processor.name, topic).set(n)

    def _shutdown(self, consumer: Consumer) -> None:
        try:
            outputs = self.processor.finish()
            if outputs:
                self._checkpoint(outputs, {})
        except Exception:
            log.exception("processor=%s final tick failed", self.processor.name)
        finally:
            try:
                consumer.close()
            finally:
                self.processor.close()
                self._producer.flush(10)
