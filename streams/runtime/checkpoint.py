"""``Checkpoint``: the uncommitted interval of one processor, and the sequence that commits it.

A checkpoint collects what was applied since the last commit: the processor's outputs,
the dead letters of the interval, and per input partition the first and the next offset
applied. ``commit()`` makes it durable in this order:

0. ownership: the runtime's ``verify`` (a synchronous commit of the group's offsets,
   which the group coordinator refuses from a member it has evicted) unless the last
   verification is younger than the lease; refused: ``Fenced`` is raised; unknown (the
   coordinator did not answer): the commit waits for the next call;
1. ``prepare``: the store processor's changelog records and offsets record;
2. produce every output, dead letter and changelog record, then wait until all are
   acknowledged (``flush``) — a record not delivered raises and nothing below happens;
3. the store processor commits its state with the input offsets (one synced RocksDB
   write); a snapshot processor is told the offsets it has passed (``advance``) and may
   publish a snapshot recording them (its announcement is produced and flushed here);
4. the consumer group's offsets are committed (when step 0 did not): informational
   only (lag, tooling), never read back by streamlearn.

A crash before step 3 loses the interval's state and its offsets together; the restart
resumes from the offsets stored earlier and applies the interval again, so state is
exactly-once; outputs may be produced twice (the joiner's examples are not: see
``streamlearn.streams.learning.joiner``). A crash after step 3 loses nothing. Dead
letters go out in step 2, before the offsets that pass their records are stored, so
none is ever lost.

**Zombies.** A worker frozen (a GC pause, SIGSTOP, a stopped VM) past its session
time-out is evicted and its partitions go to another worker; when it wakes up it still
believes it owns them. Every write of a commit is made within a *lease* of a
verification (``lease_s``; verified again when less than half of it is left before
producing and before step 3, and checked after each record handed to the producer): a
worker that wakes up past its lease drops what it has queued, verifies again and is
refused.
What it had handed to its producer before it froze is dropped by the producer itself
(``message.timeout.ms``, set by the runtime so that lease + message time-out stay under
the session time-out less a heartbeat), so nothing it writes reaches the broker after
its partitions were given away; and a changelog restore ignores a fenced writer's
intervals in any case (``streamlearn.streams.state.changelog``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from streamlearn.streams.errors import Fenced, KafkaError
from streamlearn.streams.kafka.clients import ProducerLike, flush
from streamlearn.streams.kafka.dead_letters import dead_letter_headers, note_dead_letter
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.runtime.metrics import EVENTS_OUT
from streamlearn.streams.runtime.processor import (
    Output,
    Processor,
    SnapshotProcessor,
    StoreProcessor,
    TopicPartitionKey,
)

log = logging.getLogger(__name__)

CommitOffsets = Callable[[dict[TopicPartitionKey, int]], None]
#: Ownership of the partitions, asked of the group coordinator with these offsets: True
#: (confirmed), False (no answer now: try later); raises ``Fenced`` when refused.
Verify = Callable[[dict[TopicPartitionKey, int]], bool]


class Checkpoint:
    """One processor's uncommitted interval (see the module docstring)."""

    def __init__(
        self,
        processor: Processor,
        producer: ProducerLike,
        commit_offsets: CommitOffsets | None = None,
        clock: Callable[[], float] = time.time,
        verify: Verify | None = None,
        lease_s: float = 1.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.processor = processor
        self.producer = producer
        self._commit_offsets = commit_offsets
        self._clock = clock
        self._verify = verify
        self.lease_s = lease_s
        self._monotonic = monotonic
        #: until when (``monotonic``) the last verification holds
        self._lease_end = float("-inf")
        self._verified = False
        self._undelivered: list[str] = []
        self._store: StoreProcessor | None = (
            processor if isinstance(processor, StoreProcessor) else None
        )
        self._snapshot: SnapshotProcessor | None = (
            processor if isinstance(processor, SnapshotProcessor) else None
        )
        if (self._store is None) == (self._snapshot is None):
            raise TypeError(
                f"processor={processor.name} must be either a store processor (prepare, "
                "commit, discard) or a snapshot processor (advance)"
            )
        self.started_at = clock()
        self.outputs: list[Output] = []
        #: next offset to apply per input partition (what a commit stores)
        self.offsets: dict[TopicPartitionKey, int] = {}
        #: first offset applied per input partition (where a rewind goes back to)
        self.starts: dict[TopicPartitionKey, int] = {}
        #: records applied per input topic (dead letters not counted)
        self.applied: Counter[str] = Counter()
        #: per (input topic, partition, outcome): records applied, dead-lettered, skipped
        #: (committed with a store processor's state: ``StoreProcessor.tally``)
        self.tallies: Counter[tuple[str, int, str]] = Counter()
        #: outputs produced over the checkpoint's life, for statistics
        self.produced = 0

    @property
    def empty(self) -> bool:
        """Nothing applied or produced since the last commit."""
        return not self.offsets and not self.outputs

    def size(self) -> int:
        """Records applied since the last commit."""
        return sum(self.applied.values())

    def expired(self, interval_s: float) -> bool:
        """True when the last commit is ``interval_s`` or more ago."""
        return self._clock() - self.started_at >= interval_s

    def store_offsets(
        self, first: dict[TopicPartitionKey, int], nxt: dict[TopicPartitionKey, int]
    ) -> None:
        """Record that partitions were applied from ``first`` up to (excluding) ``nxt``."""
        for tp, off in first.items():
            self.starts.setdefault(tp, off)
        self.offsets.update(nxt)

    def add(self, outputs: list[Output]) -> None:
        """Outputs to produce at the next commit."""
        self.outputs.extend(outputs)

    def dead_letter(self, msg: Message, reason: str, error: str) -> None:
        """Dead-letter ``msg`` at the next commit, with its error in the headers."""
        topic = msg.topic() or "?"
        self.outputs.append(
            Output(
                Topics.dlq(topic),
                msg.value(),
                msg.key(),
                None,
                dead_letter_headers(msg, reason, error),
            )
        )
        note_dead_letter(msg, reason, error)
        self.tallies[(topic, msg.partition() or 0, "dead_lettered")] += 1

    def drop(self) -> None:
        """Forget the interval without committing (its batches are re-applied)."""
        self.outputs, self.offsets, self.starts = [], {}, {}
        self.applied = Counter()
        self.tallies = Counter()
        self.started_at = self._clock()

    def expire_lease(self) -> None:
        """Verify ownership again before the next write (new partitions were assigned)."""
        self._lease_end = float("-inf")

    def _owned(self, offsets: dict[TopicPartitionKey, int], ahead: float = 0.5) -> bool:
        """Whether the lease holds for ``ahead`` of its length still, verifying again
        when not (see the module docstring); raises ``Fenced`` when the coordinator
        refuses."""
        if self._verify is None or self._monotonic() < self._lease_end - ahead * self.lease_s:
            return True
        asked = self._monotonic()
        if not self._verify(offsets):
            return False
        self._lease_end = asked + self.lease_s
        self._verified = True
        return True

    def commit(self) -> Counter[str] | None:
        """Run the commit sequence; return the records applied per topic it made durable,
        or ``None`` when ownership could not be verified now (nothing was written)."""
        offsets = self.offsets
        self._verified = False
        if not self._owned(offsets):
            return None
        outputs = self.outputs
        if self._store is not None:
            self._store.tally(self.tallies)
            outputs = outputs + self._store.prepare(offsets)
        self._produce(outputs, offsets)
        self._flush()
        self._still_owned(offsets)
        if self._store is not None:
            self._store.commit(offsets)
        elif self._snapshot is not None:
            announced = self._snapshot.advance(offsets)
            if announced:
                self._still_owned(offsets)  # a snapshot may take longer than the lease
                self._produce(announced, offsets)
                self._flush()
        if offsets and self._commit_offsets is not None and not self._verified:
            self._commit_offsets(offsets)
        applied = self.applied
        self.drop()
        return applied

    def _still_owned(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """The lease ran out mid-commit (the process was frozen): verify again or stop;
        the commit cannot wait now, part of it is written."""
        if not self._owned(offsets):
            raise KafkaError(
                f"processor={self.processor.name}: the lease ran out mid-commit and the "
                "group coordinator did not answer; stopping uncommitted"
            )

    def _flush(self) -> None:
        flush(self.producer)
        if self._undelivered:
            failed, self._undelivered = self._undelivered, []
            raise KafkaError(
                f"processor={self.processor.name}: {len(failed)} records not delivered "
                f"(first: {failed[0]}); stopping uncommitted"
            )

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._undelivered.append(f"topic={msg.topic()}: {err}")

    def _produce(self, outputs: list[Output], offsets: dict[TopicPartitionKey, int]) -> None:
        send = self.producer.produce
        per_topic: Counter[str] = Counter()
        now = self._monotonic
        leased = self._verify is not None
        last = now()
        for o in outputs:
            per_topic[o.topic] += 1
            kw: dict[str, object] = {"on_delivery": self._on_delivery}
            if o.partition is not None:
                kw["partition"] = o.partition
            if o.headers:
                kw["headers"] = o.headers
            while True:
                try:
                    send(o.topic, o.value, o.key, **kw)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            if leased:
                t = now()
                if t >= self._lease_end:
                    self._lease_ran_out(offsets, stalled_s=t - last)
                last = t
        self.produced += len(outputs)
        for topic, c in per_topic.items():
            EVENTS_OUT.labels(self.processor.name, topic).inc(c)

    def _lease_ran_out(self, offsets: dict[TopicPartitionKey, int], stalled_s: float) -> None:
        """The lease ran out while producing. After a stall (``stalled_s`` since the last
        record: the process did not run, maybe frozen past its session), what is queued
        is dropped before the producer sends it and the commit stops (``Fenced`` when the
        coordinator refuses this worker): the interval cannot be completed. After slow
        work, with no stall, ownership is verified again and producing goes on."""
        if stalled_s < self.lease_s / 2:
            try:
                if self._owned(offsets, ahead=0.0):
                    return
            except Fenced:
                self.producer.purge()
                raise
            self.producer.purge()
            raise KafkaError(
                f"processor={self.processor.name}: the lease ran out while producing and the "
                "group coordinator did not answer; stopping uncommitted"
            )
        self.producer.purge()
        self._owned(offsets, ahead=0.0)  # raises Fenced when this worker lost its partitions
        raise KafkaError(
            f"processor={self.processor.name}: the lease ran out while producing, after "
            f"{stalled_s:.1f}s without running; its queued records were dropped; stopping "
            "uncommitted"
        )
