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
A worker frozen past its session time-out is fenced: it verifies it still owns its
partitions (a synchronous commit of the group's offsets, which the coordinator refuses
from an evicted member) before it writes anything after its lease ran out, and stops
(``Fenced``) when refused (``streamlearn.streams.runtime.checkpoint``).
A stop asked for (``stop``, ``max_seconds``, ``max_events``) commits everything and runs
the processor's ``finish``, and raises if that fails; an error ends the run without
committing anything more, as a crash would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError

from streamlearn.streams.errors import Fenced, StreamsError
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
    #: The consumer's session time-out and heartbeat interval (``KafkaConfig``'s, unless a
    #: ``KafkaCluster`` says otherwise): the lease and the producer's message time-out are
    #: cut from them (``fencing``).
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    #: A static assignment: read these partitions, outside any consumer group's
    #: rebalances (several trainer ranks split a topic so); ``None``: subscribe as a member
    #: of ``group_id``, which shares the input's partitions among its members.
    assignment: tuple[TopicPartitionKey, ...] | None = None

    def fencing(self) -> tuple[float, float]:
        """(lease, message time-out) in seconds: 30% and 60% of what an evicted member's
        last heartbeat leaves before its partitions can be given away (session time-out
        less a heartbeat), so a write made within the lease is delivered, or dropped by
        the producer, before that."""
        budget = self.session_timeout_s - self.heartbeat_interval_s
        if budget <= 0:
            raise ValueError(
                f"the session time-out ({self.session_timeout_s}s) must exceed the heartbeat "
                f"interval ({self.heartbeat_interval_s}s)"
            )
        return 0.3 * budget, 0.6 * budget


#: What the group coordinator answers a member it evicted (or librdkafka, once it knows).
_FENCED_CODES = frozenset(
    getattr(ClientError, name)
    for name in (
        "UNKNOWN_MEMBER_ID",
        "ILLEGAL_GENERATION",
        "FENCED_INSTANCE_ID",
        "_ASSIGNMENT_LOST",
        "FENCED_MEMBER_EPOCH",
        "STALE_MEMBER_EPOCH",
    )
    if hasattr(ClientError, name)
)


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.processor = processor
        self.cluster: Cluster = (
            KafkaCluster(cluster) if isinstance(cluster, KafkaConfig) else cluster
        )
        if isinstance(self.cluster, KafkaCluster):
            conf = self.cluster.config.consumer_conf(config.group_id)
            config = replace(
                config,
                session_timeout_s=float(conf["session.timeout.ms"]) / 1000,
                heartbeat_interval_s=float(conf["heartbeat.interval.ms"]) / 1000,
            )
        self.config = config
        lease_s, timeout_s = config.fencing()
        self._producer = (
            producer
            if producer is not None
            else self.cluster.producer(**{"message.timeout.ms": int(timeout_s * 1000)})
        )
        #: the last offset known per assigned partition (what an ownership check commits)
        self._known: dict[TopicPartitionKey, int] = {}
        self._applier = BatchApplier(
            processor,
            self._producer,
            self._commit_offsets,
            commit_interval_s=config.commit_interval_s,
            seek=self._seek,
            clock=clock,
            verify=self._verify,
            lease_s=lease_s,
            monotonic=monotonic,
        )
        self.stats = self._applier.stats
        self._consumer: ConsumerLike | None = None
        self._stop = threading.Event()
        self._failed = False
        self._assigned = False
        self._next_lag = 0.0

    def _commit_offsets(self, offsets: dict[TopicPartitionKey, int]) -> None:
        # Informational (lag, tooling): the truth is the offsets stored with the state.
        self._known.update(offsets)
        if self._consumer is not None:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=True,
            )

    def _verify(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        """Whether the group coordinator still counts this worker as the owner of its
        partitions: a synchronous commit of their offsets (also informational)."""
        known = {**self._known, **offsets}
        if self._consumer is None or not known:
            return True  # nothing assigned: nothing of anyone's to write
        tps = [TopicPartition(t, p, o) for (t, p), o in known.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False) or []
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, ClientError) and err.code() in _FENCED_CODES:
                raise Fenced(
                    f"processor={self.processor.name}: the group coordinator no longer counts "
                    f"this worker as a member ({err.str()}): its partitions were given to "
                    "another while it was not responding; stopping uncommitted"
                ) from exc
            log.warning(
                "processor=%s could not verify it still owns its partitions (%s); the commit waits",
                self.processor.name,
                exc,
            )
            return False
        failed = [tp.error for tp in result if tp.error is not None]
        if failed:
            log.warning("processor=%s: ownership check failed: %s", self.processor.name, failed)
            return False
        self._known = known
        return True

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
            self._known[(tp.topic, tp.partition)] = max(tp.offset, 0)
        self._applier.checkpoint.expire_lease()  # a new generation: verify before writing
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
            # what was applied is committed before the state closes, if this worker still
            # owns it; else its next owner applies it again
            try:
                committed = self._applier.commit()
            except Fenced as exc:
                log.warning("%s; abandoning the uncommitted interval", exc)
                committed = False
            if not committed:
                self._applier.abandon()
        self._applier.forget(keys)
        for key in keys:
            self._known.pop(key, None)
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
        if self.config.assignment is not None:
            self._on_assign(consumer, [TopicPartition(t, p) for t, p in self.config.assignment])
        else:
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
