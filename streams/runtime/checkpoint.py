"""``Checkpoint``: the uncommitted interval of one processor, and the sequence that commits it.

A checkpoint collects what was applied since the last commit: the processor's outputs,
the dead letters of the interval, and per input partition the first and the next offset
applied. ``commit()`` makes it durable in this order:

1. ``prepare``: the store processor's changelog records and offsets record;
2. produce every output, dead letter and changelog record, then wait until all are
   acknowledged (``flush``) — a failure raises and nothing below happens;
3. the store processor commits its state with the input offsets (one synced RocksDB
   write); a snapshot processor is told the offsets it has passed (``advance``) and may
   publish a snapshot recording them (its announcement is produced and flushed here);
4. the consumer group's offsets are committed: informational only (lag, tooling), never
   read back by streamlearn.

A crash before step 3 loses the interval's state and its offsets together; the restart
resumes from the offsets stored earlier and applies the interval again, so state is
exactly-once and outputs at-least-once (the interval's outputs may be produced twice).
A crash after step 3 loses nothing. Dead letters go out in step 2, before the offsets
that pass their records are stored, so none is ever lost.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Message

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


class Checkpoint:
    """One processor's uncommitted interval (see the module docstring)."""

    def __init__(
        self,
        processor: Processor,
        producer: ProducerLike,
        commit_offsets: CommitOffsets | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.processor = processor
        self.producer = producer
        self._commit_offsets = commit_offsets
        self._clock = clock
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

    def drop(self) -> None:
        """Forget the interval without committing (its batches are re-applied)."""
        self.outputs, self.offsets, self.starts = [], {}, {}
        self.applied = Counter()
        self.started_at = self._clock()

    def commit(self) -> Counter[str]:
        """Run the commit sequence; return the records applied per topic it made durable."""
        offsets = self.offsets
        outputs = self.outputs
        if self._store is not None:
            outputs = outputs + self._store.prepare(offsets)
        self._produce(outputs)
        flush(self.producer)
        if self._store is not None:
            self._store.commit(offsets)
        elif self._snapshot is not None:
            announced = self._snapshot.advance(offsets)
            if announced:
                self._produce(announced)
                flush(self.producer)
        if offsets and self._commit_offsets is not None:
            self._commit_offsets(offsets)
        applied = self.applied
        self.drop()
        return applied

    def _produce(self, outputs: list[Output]) -> None:
        send = self.producer.produce
        per_topic: Counter[str] = Counter()
        for o in outputs:
            per_topic[o.topic] += 1
            kw: dict[str, object] = {}
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
        self.produced += len(outputs)
        for topic, c in per_topic.items():
            EVENTS_OUT.labels(self.processor.name, topic).inc(c)
