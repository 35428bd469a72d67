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

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.applier import BatchApplier, RuntimeStats
from streams.config import KafkaConfig
from streams.kafka import check, make_consumer, make_producer
from streams.metrics import (
    CONSUMER_LAG,
)
from streams.processor import BatchProcessor, TopicPartitionKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime polls."""

    group_id: str
    batch_size: int = 2000
    poll_timeout_s: float = 0.1
    lag_interval_s: float = 5.0
    #: Seconds between commits of state + offsets + outputs (see ``streams.applier``):
    #: an entity updated many times within it is stored and emitted once.
    commit_interval_s: float = 1.0


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
        self._producer = producer or make_producer(kafka)
        self._applier = BatchApplier(
            processor,
            self._producer,
            self._commit_offsets,
            commit_interval_s=config.commit_interval_s,
            seek=self._seek,
        )
        self.stats = self._applier.stats
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._next_lag = 0.0

    def _commit_offsets(self, offsets: dict[TopicPartitionKey, int]) -> None:
        # Informational (lag, tooling): the truth is the offsets stored with the state.
        if self._consumer is not None:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )

    def _seek(self, starts: dict[TopicPartitionKey, int]) -> None:
        assert self._consumer is not None
        for (t, p), off in starts.items():
            self._consumer.seek(TopicPartition(t, p, off))

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
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._applier.commit()  # what was applied is committed before the state closes
        self._applier.forget(keys)
        self.processor.revoke(keys)

    # -- the loop ------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None, max_events: int | None = None) -> RuntimeStats:
        """Run until ``stop()``, ``max_seconds`` elapse, or ``max_events`` are consumed."""
        consumer = make_consumer(self.kafka, self.config.group_id)
        self._consumer = consumer
        consumer.subscribe(
            self._applier.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if max_events is not None and self.stats.consumed >= max_events:
                    break
                msgs = consumer.consume(self.config.batch_size, self.config.poll_timeout_s)
                self._applier.apply([m for m in msgs if m.error() is None or check(m)])
                self._report_lag(consumer)
        finally:
            self._shutdown(consumer)
        return self.stats

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
            self._applier.finish()
        finally:
            try:
                consumer.close()
            finally:
                self.processor.close()
                self._producer.flush(10)
