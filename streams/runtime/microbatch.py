"""The micro-batch runtime: runs a processor on confluent-kafka (or any ``Cluster``).

Per poll: consume up to ``batch_size`` records, decode them (a bad record goes to its
dead-letter topic), apply the batch function, and every ``commit_interval_s`` run the
checkpoint's commit sequence (``streamlearn.streams.runtime.checkpoint``): outputs and changelog
produced and acknowledged, then state and input offsets written in one synced RocksDB write.

Where a partition resumes is what the processor's ``assign`` says: the offsets stored
with its state (or its snapshot), else the beginning of the partition — never the
consumer group's committed offset, which is written only for lag and tooling.

Guarantee: state updates are exactly-once with respect to the input; outputs are
at-least-once (a crash between producing and storing re-emits that interval's outputs).
A stop asked for (``stop``, ``max_seconds``, ``max_events``) commits everything and runs
the processor's ``finish``, and raises if that fails; an error ends the run without
committing anything more, as a crash would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import (
    Cluster,
    ConsumerLike,
    KafkaCluster,
    ProducerLike,
    check,
)
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.runtime.applier import BatchApplier, RuntimeStats
from streamlearn.streams.runtime.metrics import CONSUMER_LAG
from streamlearn.streams.runtime.processor import Processor, TopicPartitionKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime polls."""

    group_id: str
    batch_size: int = 2000
    poll_timeout_s: float = 0.1
    lag_interval_s: float = 5.0
    #: Seconds between commits of state + offsets + outputs (see
    #: ``streamlearn.streams.runtime.checkpoint``):
    #: an entity updated many times within it is stored and emitted once.
    commit_interval_s: float = 1.0


def _describe(offset: int) -> str:
    return "beginning" if offset == OFFSET_BEGINNING else str(offset)


class MicroBatchRuntime:
    """Consume → apply → checkpoint, one micro-batch at a time."""

    def __init__(
        self,
        processor: Processor,
        cluster: Cluster | KafkaConfig,
        config: RuntimeConfig,
        producer: ProducerLike | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.processor = processor
        self.cluster: Cluster = (
            KafkaCluster(cluster) if isinstance(cluster, KafkaConfig) else cluster
        )
        self.config = config
        self._producer = producer if producer is not None else self.cluster.producer()
        self._applier = BatchApplier(
            processor,
            self._producer,
            self._commit_offsets,
            commit_interval_s=config.commit_interval_s,
            seek=self._seek,
            clock=clock,
        )
        self.stats = self._applier.stats
        self._consumer: ConsumerLike | None = None
        self._stop = threading.Event()
        self._failed = False
        self._assigned = False
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
    def _on_assign(self, consumer: ConsumerLike, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        starts = self.processor.assign(keys)
        missing = [k for k in keys if k not in starts]
        if missing:
            raise StreamsError(
                f"processor={self.processor.name} gave no start offset for {missing}; "
                "a processor resumes only from its own offsets"
            )
        for tp in partitions:
            tp.offset = starts[(tp.topic, tp.partition)]
        log.info(
            "processor=%s assigned %s",
            self.processor.name,
            ", ".join(
                f"topic={t} partition={p} offset={_describe(starts[(t, p)])}" for t, p in keys
            ),
        )
        consumer.assign(partitions)
        self._assigned = True

    def _on_revoke(self, consumer: ConsumerLike, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if not self._failed:  # after an error, nothing more is committed
            self._applier.commit()  # what was applied is committed before the state closes
        self._applier.forget(keys)
        self.processor.revoke(keys)

    # -- the loop ------------------------------------------------------------------------
    def run(
        self,
        max_seconds: float | None = None,
        max_events: int | None = None,
        idle_polls: int | None = None,
    ) -> RuntimeStats:
        """Run until ``stop()``, ``max_seconds`` elapse, ``max_events`` are consumed, or
        ``idle_polls`` polls in a row bring nothing once partitions are assigned."""
        consumer = self.cluster.consumer(self.config.group_id)
        self._consumer = consumer
        consumer.subscribe(
            self._applier.topics, on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        idle = 0
        clean = False
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if max_events is not None and self.stats.consumed >= max_events:
                    break
                if idle_polls is not None and idle >= idle_polls:
                    break
                # Waits out poll_timeout_s unless a whole batch comes (librdkafka), which
                # gathers a producer's burst (a joiner's commit) into one batch.
                msgs = consumer.consume(self.config.batch_size, self.config.poll_timeout_s)
                data = [m for m in msgs if m.error() is None or check(m)]
                idle = 0 if data else idle + (1 if self._assigned else 0)
                self._applier.apply(data)
                self._report_lag(consumer)
            clean = True
        finally:
            self._shutdown(consumer, clean)
        return self.stats

    def _report_lag(self, consumer: ConsumerLike) -> None:
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

    def _shutdown(self, consumer: ConsumerLike, clean: bool) -> None:
        """A clean stop commits and finishes (raising if that fails); after an error
        nothing more is committed, as after a crash."""
        self._failed = not clean
        try:
            if clean:
                self._applier.finish()
                self._producer.flush(10)
        except BaseException:
            self._failed = True
            raise
        finally:
            try:
                consumer.close()
            finally:
                self.processor.close()
