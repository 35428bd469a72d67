"""What both runtimes share: decode (bad → dead letters), apply, and checkpoint.

A runtime hands over the messages it consumed; ``BatchApplier`` decodes them, runs the
processor's batch function and adds the results to its ``Checkpoint``, which commits
every ``commit_interval_s`` (like Kafka Streams' ``commit.interval.ms``): an entity
touched many times in the interval is encoded, stored and emitted once, at the cost of
up to that interval of output latency.

A ``BatchProcessor`` gets each topic's decoded records as one ``RecordBatch`` (arrays
of partitions, offsets and timestamps, a list of values): no ``Record`` per message.

A batch that raises is retried record by record; a record that still raises is
dead-lettered with ``processing_error``. For a store processor whose earlier batches of
the interval are not committed yet, their state went with the ``discard`` too: the
interval is dropped, the consumer rewound (``seek``) to its first offsets, and the whole
interval re-applied record by record. A snapshot processor's ``process`` is
all-or-nothing, so only the failed batch is retried. ``StateLost`` is never retried: it
propagates and the runtime stops without committing.

A commit whose ownership could not be verified (``streamlearn.streams.runtime.checkpoint``:
the group coordinator did not answer) waits for the next batch; where it cannot wait (a
record-by-record retry, a stop) that is an error, and before a revoke the interval is
abandoned (the partitions' next owner applies it again from the stored offsets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from streamlearn.streams.errors import ContractError, KafkaError, StateLost
from streamlearn.streams.kafka.clients import ProducerLike
from streamlearn.streams.runtime.checkpoint import Checkpoint, CommitOffsets, Verify
from streamlearn.streams.runtime.metrics import (
    BATCH_SECONDS,
    EVENTS_IN,
    EVENTS_PROCESSED,
    INVALID_SKIPPED,
)
from streamlearn.streams.runtime.processor import (
    BatchProcessor,
    Output,
    Processor,
    Record,
    RecordBatch,
    StoreProcessor,
    TopicPartitionKey,
)

log = logging.getLogger(__name__)


@dataclass
class RuntimeStats:
    """Counters of one runtime run, for tests and benchmarks."""

    consumed: int = 0
    processed: int = 0
    dead_lettered: int = 0
    produced: int = 0
    batches: int = 0


Seek = Callable[[dict[TopicPartitionKey, int]], None]


@dataclass
class BatchApplier:
    """Runs one processor's micro-batches into one checkpoint."""

    processor: Processor
    producer: ProducerLike
    on_committed: CommitOffsets | None = None
    stats: RuntimeStats = field(default_factory=RuntimeStats)
    #: Seconds between commits (0: every batch). A store processor needs ``seek`` when > 0.
    commit_interval_s: float = 0.0
    #: Commit earlier than the interval once this many records are uncommitted.
    max_uncommitted: int = 100_000
    seek: Seek | None = None
    clock: Callable[[], float] = time.time
    #: ownership checks (``streamlearn.streams.runtime.checkpoint``); ``None``: none
    verify: Verify | None = None
    lease_s: float = 1.5
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._store: StoreProcessor | None = (
            self.processor if isinstance(self.processor, StoreProcessor) else None
        )
        self._columns: BatchProcessor | None = (
            self.processor if isinstance(self.processor, BatchProcessor) else None
        )
        if self.commit_interval_s > 0 and self._store is not None and self.seek is None:
            raise ValueError("a commit interval needs a seek callback to rewind on failure")
        self._decoders = dict(self.processor.inputs())
        owned = self.processor.dead_letter_inputs
        self._owned: frozenset[str] | None = None if owned is None else frozenset(owned)
        self.checkpoint = Checkpoint(
            self.processor,
            self.producer,
            self.on_committed,
            self.clock,
            self.verify,
            self.lease_s,
            self.monotonic,
        )
        # After a rewind: re-apply record by record up to these offsets.
        self._careful: dict[TopicPartitionKey, int] = {}

    @property
    def topics(self) -> list[str]:
        """The processor's input topics."""
        return list(self._decoders)

    def apply(self, msgs: Sequence[Message]) -> None:
        """Decode and apply one batch of data messages (errors filtered out); commit when
        the interval is due."""
        if self._columns is not None and not self._careful:
            self._apply_columns(self._columns, msgs)
            return
        t0 = time.perf_counter()
        name = self.processor.name
        records: list[Record] = []
        append = records.append
        first: dict[TopicPartitionKey, int] = {}
        offsets: dict[TopicPartitionKey, int] = {}
        consumed: dict[str, int] = {}
        decoders = self._decoders
        cp = self.checkpoint
        for m in msgs:
            topic: str = m.topic()  # type: ignore[assignment]
            part: int = m.partition()  # type: ignore[assignment]
            off: int = m.offset()  # type: ignore[assignment]
            if (topic, part) not in offsets:
                first[(topic, part)] = off
            offsets[(topic, part)] = off + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            raw = m.value()
            try:
                value = decoders[topic](raw)
            except ContractError as exc:
                if self._owned is None or topic in self._owned:
                    cp.dead_letter(m, exc.reason, str(exc))
                    self.stats.dead_lettered += 1
                else:
                    INVALID_SKIPPED.labels(name, topic).inc()
                    cp.tallies[(topic, part, "skipped")] += 1
                continue
            kind, ms = m.timestamp()
            stamp = ms / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0 else None
            append(Record(topic, part, off, m.key(), value, raw, stamp))
        self.stats.consumed += len(msgs)
        for topic, c in consumed.items():
            EVENTS_IN.labels(name, topic).inc(c)
        if self._careful:
            self._one_by_one(records, msgs, first, offsets)
            self._careful = {
                tp: end for tp, end in self._careful.items() if offsets.get(tp, -1) < end
            }
            return
        try:
            outputs = self.processor.process(records) if records else []
        except StateLost:
            raise
        except Exception:
            log.exception("processor=%s batch failed; retrying record by record", name)
            self._recover(records, msgs, first, offsets)
            return
        tallies = cp.tallies
        for r in records:
            cp.applied[r.topic] += 1
            tallies[(r.topic, r.partition, "applied")] += 1
        self._applied(outputs, first, offsets, t0)

    def _applied(
        self,
        outputs: list[Output],
        first: dict[TopicPartitionKey, int],
        offsets: dict[TopicPartitionKey, int],
        t0: float,
    ) -> None:
        """A batch was applied: its outputs and offsets join the interval."""
        cp = self.checkpoint
        # Not a record's fault when it fails: it propagates and the runtime stops uncommitted.
        outputs += self.processor.tick(self.clock())
        cp.add(outputs)
        cp.store_offsets(first, offsets)
        BATCH_SECONDS.labels(self.processor.name).observe(time.perf_counter() - t0)
        if cp.expired(self.commit_interval_s) or cp.size() >= self.max_uncommitted:
            self.commit()

    def _apply_columns(self, proc: BatchProcessor, msgs: Sequence[Message]) -> None:
        """``apply`` for a batch processor: per topic, one ``RecordBatch``."""
        t0 = time.perf_counter()
        topics = [m.topic() for m in msgs]
        groups: dict[str, list[Message]] = {}
        if topics and topics.count(topics[0]) == len(topics):
            groups[topics[0]] = list(msgs)  # type: ignore[index]
        else:
            for m, t in zip(msgs, topics, strict=True):
                groups.setdefault(t, []).append(m)  # type: ignore[arg-type]
        first: dict[TopicPartitionKey, int] = {}
        offsets: dict[TopicPartitionKey, int] = {}
        batches: list[RecordBatch] = []
        for topic, ms in groups.items():
            EVENTS_IN.labels(self.processor.name, topic).inc(len(ms))
            parts = np.array([m.partition() for m in ms], dtype=np.int32)
            offs = np.array([m.offset() for m in ms], dtype=np.int64)
            _ends(topic, parts, offs, first, offsets)  # dead letters are passed too
            good, values = self._decode_all(topic, ms)
            if good is not None:
                ms, parts, offs = [ms[i] for i in good], parts[good], offs[good]
            if values:
                batches.append(RecordBatch(topic, parts, offs, values, ms))
        self.stats.consumed += len(msgs)
        outputs: list[Output] = []
        try:
            for batch in batches:
                outputs += proc.process_batch(batch)
        except StateLost:
            raise
        except Exception:
            log.exception(
                "processor=%s batch failed; retrying record by record", self.processor.name
            )
            records = [r for b in batches for r in b.records()]
            self._recover(records, msgs, first, offsets)
            return
        tallies = self.checkpoint.tallies
        for b in batches:
            self.checkpoint.applied[b.topic] += len(b)
            if self._store is not None:  # a store processor keeps them with its state
                for part, n in zip(*np.unique(b.partitions, return_counts=True), strict=True):
                    tallies[(b.topic, int(part), "applied")] += int(n)
        self._applied(outputs, first, offsets, t0)

    def _decode_all(self, topic: str, msgs: list[Message]) -> tuple[list[int] | None, list[Any]]:
        """The decoded values of ``msgs``, and the positions of those that decoded
        (``None``: all); the others are dead-lettered (or skipped, when another processor
        owns the topic's dead letters)."""
        decode = self._decoders[topic]
        raws = [m.value() for m in msgs]
        many = getattr(decode, "many", None)
        if many is not None:
            try:
                return None, many(raws)
            except ContractError:
                pass  # one by one: the culprits get their own errors
        good: list[int] = []
        values: list[Any] = []
        for i, (m, raw) in enumerate(zip(msgs, raws, strict=True)):
            try:
                values.append(decode(raw))
            except ContractError as exc:
                if self._owned is None or topic in self._owned:
                    self.checkpoint.dead_letter(m, exc.reason, str(exc))
                    self.stats.dead_lettered += 1
                else:
                    INVALID_SKIPPED.labels(self.processor.name, topic).inc()
                    self.checkpoint.tallies[(topic, m.partition() or 0, "skipped")] += 1
                continue
            good.append(i)
        return good, values

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Partitions taken away (after ``commit``): stop tracking them."""
        for tp in partitions:
            self._careful.pop(tp, None)

    def commit(self, required: bool = False) -> bool:
        """Commit the uncommitted interval now (also before a revoke and at a stop);
        False when ownership could not be verified now (``required``: raise instead)."""
        if self.checkpoint.empty:
            return True
        before = self.checkpoint.produced
        applied = self.checkpoint.commit()
        self.stats.produced += self.checkpoint.produced - before
        if applied is None:
            if required:
                raise KafkaError(
                    f"processor={self.processor.name}: the group coordinator did not confirm "
                    "this worker still owns its partitions; stopping uncommitted"
                )
            return False
        self.stats.batches += 1
        for topic, c in applied.items():
            EVENTS_PROCESSED.labels(self.processor.name, topic).inc(c)
            self.stats.processed += c
        return True

    def abandon(self) -> None:
        """Forget the uncommitted interval (its partitions are being taken away): nothing
        of it was written, their next owner applies it again from the stored offsets. A
        snapshot processor's memory holds the interval: it stops (``StateLost``) and
        resumes from its last snapshot."""
        if self._store is None and not self.checkpoint.empty:
            raise StateLost(
                f"processor={self.processor.name} learned an interval it may not commit "
                "(its partitions were taken away); resume from the last snapshot"
            )
        if self._store is not None:
            self._store.discard()
        self.checkpoint.drop()

    def _recover(
        self,
        records: list[Record],
        msgs: Sequence[Message],
        first: dict[TopicPartitionKey, int],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        cp = self.checkpoint
        if self._store is None or not cp.offsets:
            # A snapshot processor's failed batch left no trace; a store processor with
            # nothing earlier uncommitted only lost this batch: retry just this batch.
            if self._store is not None:
                self._store.discard()
            self._one_by_one(records, msgs, first, offsets)
            return
        # Earlier batches' state went with the discard: rewind to the last commit and
        # re-apply the whole interval record by record.
        self._store.discard()
        assert self.seek is not None
        ends = {**cp.offsets, **offsets}
        starts = {**first, **cp.starts}
        log.warning(
            "processor=%s rewinding to %s to re-apply record by record", self.processor.name, starts
        )
        cp.drop()
        self._careful = ends
        self.seek(starts)

    def _one_by_one(
        self,
        records: list[Record],
        msgs: Sequence[Message],
        first: dict[TopicPartitionKey, int],
        offsets: dict[TopicPartitionKey, int],
    ) -> None:
        """Apply and commit each record alone; dead-letter the ones that raise."""
        by_coord = {(m.topic(), m.partition(), m.offset()): m for m in msgs}
        cp = self.checkpoint
        for r in records:
            try:
                outputs = self.processor.process([r])
            except StateLost:
                raise
            except Exception as exc:
                if self._store is not None:
                    self._store.discard()
                cp.dead_letter(
                    by_coord[(r.topic, r.partition, r.offset)],
                    "processing_error",
                    f"{type(exc).__name__}: {exc}",
                )
                self.stats.dead_lettered += 1
            else:
                cp.add(outputs)
                cp.applied[r.topic] += 1
                cp.tallies[(r.topic, r.partition, "applied")] += 1
            tp = (r.topic, r.partition)
            cp.store_offsets({tp: r.offset}, {tp: r.offset + 1})
            self.commit(required=True)
        cp.store_offsets(first, offsets)  # records that did not decode, after the last one
        self.commit(required=True)

    def finish(self) -> None:
        """A clean stop: commit the interval, then the processor's last outputs.

        Raises when either fails (a lost final snapshot or commit is an error)."""
        self.commit(required=True)
        outputs = self.processor.finish()
        if outputs or self._store is not None:  # finish may also have changed state
            self.checkpoint.add(outputs)
            before = self.checkpoint.produced
            if self.checkpoint.commit() is None:
                raise KafkaError(
                    f"processor={self.processor.name}: the group coordinator did not confirm "
                    "this worker still owns its partitions; its last outputs are not committed"
                )
            self.stats.produced += self.checkpoint.produced - before


def _ends(
    topic: str,
    parts: np.ndarray,
    offs: np.ndarray,
    first: dict[TopicPartitionKey, int],
    nxt: dict[TopicPartitionKey, int],
) -> None:
    """Per partition of one topic's messages (in order): the first offset and the next."""
    uniq, head = np.unique(parts, return_index=True)
    _, tail = np.unique(parts[::-1], return_index=True)
    last = len(parts) - 1 - tail
    for p, h, t in zip(uniq.tolist(), offs[head].tolist(), offs[last].tolist(), strict=True):
        first[(topic, p)] = h
        nxt[(topic, p)] = t + 1
