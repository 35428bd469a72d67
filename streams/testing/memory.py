"""An in-memory Kafka for unit tests: topics, producers, consumer groups, crashes.

``MemoryBroker`` implements ``streamlearn.streams.kafka.clients.Cluster``, so the real micro-batch
runtime, changelog restore and processors run on it unchanged, in microseconds and without a
broker process. Records are real ``confluent_kafka.Message`` objects.

What it models, and what it does not:

- a producer buffers records until ``flush``, like librdkafka's queue; after a crash
  (see ``Faults``) ``MemoryBroker.crash`` delivers a prefix of each producer's buffer and
  loses the rest, as a process killed while librdkafka was sending would; a record's
  ``on_delivery`` callback hears of it only when it failed (``delivery.report.only.error``);
- a consumer group assigns partitions with the range strategy and rebalances eagerly
  when members join or leave (revoke everything, then assign), inside ``consume``;
- a frozen process (``MemoryBroker.freeze``: SIGSTOP past the session time-out) is evicted
  from its groups: its synchronous commits are refused with ``UNKNOWN_MEMBER_ID``, its
  next ``consume`` revokes everything and rejoins; what its producers had queued expired
  meanwhile (``message.timeout.ms``) and fails on delivery;
- committed group offsets are kept (and may be ahead of a store: the checks prove the
  runtime never uses them), ``auto.offset.reset`` is always earliest;
- every topic has its own id (another MemoryBroker is another cluster); log ends are exact;
- no timestamps, retention, compaction or transactions.

``Faults`` injects a crash (``Crash``) at the n-th step of a given kind (``process``,
``produce``, ``flush``, ``state-commit``, ``consumer-commit``), which is how
``streamlearn.streams.testing.checks`` crashes a processor at every step of its commit sequence.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamlearn.streams.kafka.clients import Headers, TopicPartitionKey

__all__ = ["Crash", "Faults", "MemoryBroker", "MemoryConsumer", "MemoryProducer"]


class Crash(BaseException):
    """A simulated kill -9, raised at an injected step. A ``BaseException``, like
    ``SystemExit``: no ``except Exception`` handler can mistake it for a failed batch."""


@dataclass
class Faults:
    """Counts steps by kind and raises ``Crash`` at step ``at`` = (kind, n) (1-based);
    calls ``pause`` once at step ``pause_at`` instead (a freeze: what happens meanwhile)."""

    at: tuple[str, int] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    crashed: bool = False
    pause_at: tuple[str, int] | None = None
    pause: Callable[[], None] | None = None

    def hit(self, kind: str) -> None:
        """Count one step of ``kind``; crash or pause when it is the chosen one."""
        if self.crashed:
            raise Crash(f"already crashed at {self.at}")
        self.counts[kind] += 1
        if self.at is not None and self.at == (kind, self.counts[kind]):
            self.crashed = True
            raise Crash(f"crash injected at {kind} #{self.counts[kind]}")
        if self.pause is not None and self.pause_at == (kind, self.counts[kind]):
            pause, self.pause = self.pause, None
            pause()


class _Topic:
    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.id = uuid.uuid4().hex
        self.logs: list[list[Message]] = [[] for _ in range(partitions)]


class _Group:
    def __init__(self) -> None:
        self.members: list[MemoryConsumer] = []
        self.committed: dict[TopicPartitionKey, int] = {}

    def evict(self, member: MemoryConsumer) -> None:
        """The coordinator gives up on ``member`` (no heartbeat within its session)."""
        if member in self.members:
            self.members.remove(member)
            member.evicted = True
            self.rebalance()

    def rebalance(self) -> None:
        topics = sorted({t for m in self.members for t in m.subscription})
        plan: dict[int, list[TopicPartitionKey]] = {id(m): [] for m in self.members}
        for topic in topics:
            members = [m for m in self.members if topic in m.subscription]
            n = len(members[0].broker.topic(topic).logs) if members else 0
            # range strategy: contiguous blocks, the first members get one more
            per, extra = divmod(n, len(members)) if members else (0, 0)
            start = 0
            for i, m in enumerate(members):
                size = per + (1 if i < extra else 0)
                plan[id(m)].extend((topic, p) for p in range(start, start + size))
                start += size
        for m in self.members:
            m.pending_assignment = plan[id(m)]


class MemoryBroker:
    """Topics and consumer groups in memory; a ``streamlearn.streams.kafka.clients.Cluster``."""

    def __init__(self, partitions: int = 4, faults: Faults | None = None) -> None:
        self.partitions = partitions
        self.faults = faults or Faults()
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._producers: list[MemoryProducer] = []

    def crash(self, delivered: float = 0.5) -> None:
        """What a kill -9 leaves: each producer's unflushed records, the first
        ``delivered`` fraction of them in order (per producer), reach their partitions."""
        for producer in self._producers:
            producer.crash(delivered)

    def freeze(self) -> None:
        """What a SIGSTOP past the session time-out does to the clients that exist now:
        members are evicted from their groups, queued records expire."""
        for group in self._groups.values():
            for member in list(group.members):
                group.evict(member)
        for producer in self._producers:
            producer.expire()

    # -- topics ----------------------------------------------------------------------------
    def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet."""
        for n in names:
            if n not in self._topics:
                self._topics[n] = _Topic(n, partitions or self.partitions)

    def topic(self, name: str) -> _Topic:
        """The topic ``name``, created with the default partition count on first use."""
        if name not in self._topics:
            self.create_topics([name])
        return self._topics[name]

    def topic_names(self) -> list[str]:
        """Every topic, sorted."""
        return sorted(self._topics)

    def messages(self, topic: str) -> list[Message]:
        """Every record of ``topic``, partition by partition, in offset order."""
        return [m for log in self.topic(topic).logs for m in log]

    def latest(self, topic: str) -> dict[tuple[bytes | None, int], bytes | None]:
        """The newest value per (key, partition) of ``topic``."""
        return {(m.key(), m.partition() or 0): m.value() for m in self.messages(topic)}

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> int:
        """Write one record now (no producer, no faults); return its offset."""
        t = self.topic(topic)
        if partition is None or partition < 0:
            partition = _partition_for(key, len(t.logs))
        log = t.logs[partition]
        offset = len(log)
        hdrs: list[tuple[str, str | bytes | None]] | None = (
            None if not headers else [(k, _as_bytes(v)) for k, v in headers]
        )
        log.append(
            Message(
                topic=topic,
                partition=partition,
                offset=offset,
                key=key,
                value=value,
                headers=hdrs,
            )
        )
        return offset

    # -- the Cluster protocol --------------------------------------------------------------
    def producer(self, **extra: Any) -> MemoryProducer:
        producer = MemoryProducer(self)
        self._producers.append(producer)
        return producer

    def consumer(self, group_id: str, **extra: Any) -> MemoryConsumer:
        return MemoryConsumer(self, group_id, eof=bool(extra.get("enable.partition.eof")))

    def topic_ids(self, topics: Collection[str]) -> dict[str, str]:
        return {t: self.topic(t).id for t in topics}

    def log_ends(self, partitions: Collection[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return {(t, p): len(self.topic(t).logs[p]) for t, p in partitions}

    def partition_counts(self, topics: Collection[str]) -> dict[str, int]:
        return {t: len(self._topics[t].logs) for t in topics if t in self._topics}

    # -- groups ----------------------------------------------------------------------------
    def group(self, group_id: str) -> _Group:
        """The consumer group ``group_id`` (created on first use)."""
        return self._groups.setdefault(group_id, _Group())


def _as_bytes(v: str | bytes | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def _partition_for(key: bytes | str | None, n: int) -> int:
    if key is None:
        return 0
    import xxhash

    raw = key.encode() if isinstance(key, str) else key
    return xxhash.xxh32_intdigest(raw) % n


_Buffered = tuple[str, bytes | None, bytes | None, int | None, Headers | None]


class MemoryProducer:
    """Buffers records until ``flush``/``poll``; a crash loses the buffer."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._buffer: list[_Buffered] = []
        #: per buffered record: its delivery callback, and whether it expired
        self._callbacks: list[Callable[..., Any] | None] = []
        self._expired: list[bool] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        headers: Headers | None = None,
        on_delivery: Callable[..., Any] | None = None,
        **_: Any,
    ) -> None:
        self.broker.faults.hit("produce")
        k = key.encode() if isinstance(key, str) else key
        self._buffer.append((topic, value, k, partition, headers))
        self._callbacks.append(on_delivery)
        self._expired.append(False)

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        if self.broker.faults.crashed:
            self.purge()
            return 0
        self.broker.faults.hit("flush")
        buffered = zip(self._buffer, self._callbacks, self._expired, strict=True)
        self.purge()
        for (topic, value, key, partition, headers), callback, expired in buffered:
            if not expired:
                self.broker.append(topic, value, key, partition, headers)
            elif callback is not None:
                msg = Message(topic=topic, partition=partition, key=key, value=value)
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), msg)
        return 0

    def purge(self, *_: Any, **__: Any) -> None:
        """Drop every record not delivered yet (librdkafka's ``purge``)."""
        self._buffer, self._callbacks, self._expired = [], [], []

    def expire(self) -> None:
        """The records buffered now out-waited ``message.timeout.ms``: they fail."""
        self._expired = [True] * len(self._buffer)

    def crash(self, delivered: float) -> None:
        """Deliver the first ``delivered`` fraction of the buffer, lose the rest."""
        keep = [b for b, expired in zip(self._buffer, self._expired, strict=True) if not expired][
            : int(len(self._buffer) * delivered)
        ]
        for topic, value, key, partition, headers in keep:
            self.broker.append(topic, value, key, partition, headers)
        self.purge()

    def __len__(self) -> int:
        return len(self._buffer)


class MemoryConsumer:
    """A group member (``subscribe``) or a free reader (``assign``); with ``eof``, an
    end-of-partition event each time a partition's end is reached (as librdkafka's
    ``enable.partition.eof``)."""

    def __init__(self, broker: MemoryBroker, group_id: str, eof: bool = False) -> None:
        self.broker = broker
        self.group_id = group_id
        self.eof = eof
        #: the offset at which each partition's last end-of-partition event was given
        self._eof_at: dict[TopicPartitionKey, int] = {}
        self.subscription: list[str] = []
        self.pending_assignment: list[TopicPartitionKey] | None = None
        self._on_assign: Callable[..., Any] | None = None
        self._on_revoke: Callable[..., Any] | None = None
        self._positions: dict[TopicPartitionKey, int] = {}
        self._closed = False
        self._rr = itertools.count()
        #: evicted from the group (``MemoryBroker.freeze``): rejoins on the next consume
        self.evicted = False

    # -- membership ------------------------------------------------------------------------
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., Any] | None = None,
        on_revoke: Callable[..., Any] | None = None,
        **_: Any,
    ) -> None:
        self.subscription = list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        group = self.broker.group(self.group_id)
        if self not in group.members:
            group.members.append(self)
        group.rebalance()

    def _maybe_rebalance(self) -> None:
        if self.evicted:  # "session timed out: revoking assignment and rejoining group"
            lost = [TopicPartition(t, p) for t, p in self._positions]
            if lost and self._on_revoke is not None:
                self._on_revoke(self, lost)  # still evicted: its commits are refused
            self._positions = {}
            self.evicted = False
            group = self.broker.group(self.group_id)
            group.members.append(self)
            group.rebalance()
        if self.pending_assignment is None:
            return
        new, self.pending_assignment = self.pending_assignment, None
        old = [TopicPartition(t, p) for t, p in self._positions]
        if old:
            if self._on_revoke is not None:
                self._on_revoke(self, old)
            self._positions = {}
        # Offset OFFSET_INVALID, as librdkafka hands them: "the group's committed offset,
        # else auto.offset.reset" unless on_assign sets one.
        tps = [TopicPartition(t, p) for t, p in new]
        if self._on_assign is not None:
            self._on_assign(self, tps)  # it calls assign() with the offsets it wants
        else:
            self.assign(tps)

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions[(tp.topic, tp.partition)] = self._resolve(tp)

    def _resolve(self, tp: TopicPartition) -> int:
        end = len(self.broker.topic(tp.topic).logs[tp.partition])
        if tp.offset == OFFSET_END:
            return end
        if tp.offset < 0:
            committed = self.broker.group(self.group_id).committed.get((tp.topic, tp.partition))
            return committed if tp.offset != OFFSET_BEGINNING and committed is not None else 0
        return tp.offset

    def unassign(self) -> None:
        self._positions = {}

    def seek(self, partition: TopicPartition) -> None:
        self._positions[(partition.topic, partition.partition)] = self._resolve(partition)

    # -- reading ---------------------------------------------------------------------------
    def consume(self, num_messages: int = 1, timeout: float = 0.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        self._maybe_rebalance()
        out: list[Message] = []
        tps = sorted(self._positions)
        if not tps:
            return out
        # Round robin over partitions in slices, so batches interleave partitions.
        start = next(self._rr) % len(tps)
        order = tps[start:] + tps[:start]
        progress = True
        while len(out) < num_messages and progress:
            progress = False
            for key in order:
                log = self.broker.topic(key[0]).logs[key[1]]
                pos = self._positions.get(key)
                if pos is None or pos >= len(log):
                    continue
                take = log[pos : pos + min(50, num_messages - len(out))]
                out.extend(take)
                self._positions[key] = pos + len(take)
                progress = True
                if len(out) >= num_messages:
                    break
        if self.eof:
            for key in order:
                pos = self._positions.get(key)
                if (
                    pos is not None
                    and len(out) < num_messages
                    and self._eof_at.get(key) != pos
                    and pos >= len(self.broker.topic(key[0]).logs[key[1]])
                ):
                    self._eof_at[key] = pos
                    eof = KafkaError(KafkaError._PARTITION_EOF)
                    out.append(Message(topic=key[0], partition=key[1], offset=pos, error=eof))
        return out

    def commit(
        self,
        message: Message | None = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        self.broker.faults.hit("consumer-commit")
        if self.evicted:
            if asynchronous:
                return None  # refused; nobody hears of it
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        group = self.broker.group(self.group_id)
        for tp in offsets or []:
            group.committed[(tp.topic, tp.partition)] = tp.offset
        return None if asynchronous else list(offsets or [])

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), -1)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, *_: Any, **__: Any) -> Any:
        return (0, len(self.broker.topic(partition.topic).logs[partition.partition]))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        group = self.broker.group(self.group_id)
        if self in group.members:
            group.members.remove(self)
            group.rebalance()
