"""The processor contracts every stream processor implements, and its records.

A processor is plain Python: decoded records in, output records out. Two kinds, told
apart by how their state reaches a checkpoint
(``streamlearn.streams.runtime.checkpoint.Checkpoint``) and by the methods that says (a processor is
exactly one of them):

- ``StoreProcessor`` — state in partitioned RocksDB stores (``StatefulProcessor``: the
  feature processor, the joiner). ``process`` buffers writes; at a commit the runtime
  asks for the changelog records (``prepare``), produces them with the outputs, waits for
  the acknowledgements, then has the processor ``commit`` state and input offsets in one
  write. ``discard`` drops what a failed batch buffered.
- ``SnapshotProcessor`` — state in memory, checkpointed by snapshots that record the
  offsets they cover (the online trainer). ``process`` is all-or-nothing: when it raises,
  nothing of the batch was applied. An error that leaves the state undefined is raised as
  ``streamlearn.streams.errors.StateLost``: the runtime stops without committing, and the restart
  resumes from the last snapshot.

A processor that works on columns also implements ``process_batch`` (a
``BatchProcessor``): the runtime then hands it each input topic's decoded records as one
``RecordBatch`` (partitions, offsets and timestamps as arrays, the values as a list)
instead of a ``Record`` per message, and falls back to ``process`` only to retry a failed
batch record by record.

Both resume only from offsets they stored themselves: ``assign`` returns a start offset
for every partition (``OFFSET_BEGINNING`` when there is none), never "the group's
committed offset". They run without a broker on ``streamlearn.streams.testing.memory.MemoryBroker``
and under either runtime (``runtime.MicroBatchRuntime``, or ``faust_runtime``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Message

from streamlearn.streams.kafka.clients import Cluster, Headers, TopicPartitionKey
from streamlearn.streams.runtime.metrics import COMMITTED
from streamlearn.streams.state.partitioned import PartitionedState
from streamlearn.streams.state.restore import RestoreSource
from streamlearn.streams.state.store import Durability, Provenance

Decoder = Callable[[bytes | None], Any]
__all__ = [
    "OFFSET_BEGINNING",
    "BatchProcessor",
    "Decoder",
    "Output",
    "Processor",
    "Record",
    "RecordBatch",
    "SnapshotProcessor",
    "StatefulProcessor",
    "StoreProcessor",
    "TopicPartitionKey",
]


class Record(msgspec.Struct, frozen=True, gc=False):
    """A decoded input record with its Kafka coordinates and its raw bytes.

    msgspec structs, not dataclasses: several are built per event on the hot path and a
    frozen dataclass costs ~8× more to construct.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    raw: bytes | None = None
    #: The record's Kafka timestamp in epoch seconds (when its producer sent it, or when
    #: the broker appended it, per the topic's ``message.timestamp.type``); ``None`` when
    #: the broker gave none.
    timestamp: float | None = None


@dataclass(frozen=True)
class RecordBatch:
    """Decoded records of one input topic, in arrival order, as columns."""

    topic: str
    #: partition of each record (int32)
    partitions: np.ndarray
    #: offset of each record (int64)
    offsets: np.ndarray
    #: the decoded values
    values: list[Any]
    #: where each record came from (Kafka messages, or ``Record``\ s): keys, raw bytes and
    #: timestamps are read from them only when asked for
    sources: Sequence[Message | Record]

    def __len__(self) -> int:
        return len(self.values)

    def timestamps(self, at: Sequence[int] | None = None) -> np.ndarray:
        """Kafka timestamps in epoch seconds (NaN where the broker gave none) of the
        records at positions ``at`` (all by default)."""
        picked = self.sources if at is None else [self.sources[i] for i in at]
        return np.array([_timestamp(s) for s in picked], dtype=np.float64)

    def select(self, keep: np.ndarray) -> RecordBatch:
        """The records at positions ``keep`` (sorted indices)."""
        picks = keep.tolist()
        return RecordBatch(
            self.topic,
            self.partitions[keep],
            self.offsets[keep],
            [self.values[i] for i in picks],
            [self.sources[i] for i in picks],
        )

    def records(self) -> list[Record]:
        r"""The batch as ``Record``\ s (for retrying it record by record)."""
        out = []
        for s, p, o, v in zip(
            self.sources, self.partitions.tolist(), self.offsets.tolist(), self.values, strict=True
        ):
            if isinstance(s, Record):
                out.append(s)
            else:
                stamp = _timestamp(s)
                out.append(
                    Record(
                        self.topic, p, o, s.key(), v, s.value(), None if stamp != stamp else stamp
                    )
                )
        return out

    @classmethod
    def of(cls, records: Sequence[Record]) -> list[RecordBatch]:
        """``records`` as one batch per topic (in the order topics first appear)."""
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        return [
            cls(
                topic,
                np.array([r.partition for r in rs], dtype=np.int32),
                np.array([r.offset for r in rs], dtype=np.int64),
                [r.value for r in rs],
                rs,
            )
            for topic, rs in by_topic.items()
        ]


def _timestamp(source: Message | Record) -> float:
    if isinstance(source, Record):
        return math.nan if source.timestamp is None else source.timestamp
    kind, ms = source.timestamp()
    return ms / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0 else math.nan


class Output(msgspec.Struct, frozen=True, gc=False):
    """A record to produce. ``partition`` pins it (changelogs); else the key decides."""

    topic: str
    value: bytes | None
    key: str | bytes | None = None
    partition: int | None = None
    headers: Headers | None = None


class Processor(Protocol):
    """What a runtime needs from any processor."""

    name: str
    #: Input topics whose undecodable records this processor dead-letters. When several
    #: processors read one topic, exactly one owns its dead letters; the others skip
    #: such records (counted). ``None``: all inputs.
    dead_letter_inputs: frozenset[str] | None

    def inputs(self) -> Mapping[str, Decoder]:
        """Input topic → decoder (raises ``ContractError`` for a bad record)."""
        ...

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Open state for new partitions; return where each resumes: the offset stored
        with the state, or ``OFFSET_BEGINNING``. Every partition gets one."""
        ...

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        """Close state of partitions taken away (after the runtime committed)."""
        ...

    def process(self, records: list[Record]) -> list[Output]:
        """Apply a batch; return outputs."""
        ...

    def tick(self, now: float) -> list[Output]:
        """Time-driven work (closing windows, snapshots); called once per poll."""
        ...

    def finish(self) -> list[Output]:
        """Last outputs on a clean stop (e.g. a final snapshot); committed after."""
        ...

    def close(self) -> None:
        """Release everything (uncommitted state is dropped)."""
        ...


@runtime_checkable
class StoreProcessor(Processor, Protocol):
    """A processor whose state is buffered, then committed with the input offsets."""

    def tally(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        """Count the interval's records per (input topic, partition, outcome: applied,
        dead_lettered, skipped) into the state it commits next."""
        ...

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        """Outputs that must be durable before ``commit`` (changelog records)."""
        ...

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Persist buffered state with ``offsets`` (next offset per input partition)."""
        ...

    def discard(self) -> None:
        """Drop buffered state (the batch failed)."""
        ...


@runtime_checkable
class SnapshotProcessor(Processor, Protocol):
    """A processor checkpointed by its own snapshots; ``process`` is all-or-nothing."""

    def advance(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        """Everything below ``offsets`` is applied, pending in memory, or dead-lettered
        (and the dead letters are acknowledged): a snapshot taken now may cover it.
        Returns records to produce (a snapshot's announcement)."""
        ...


@runtime_checkable
class BatchProcessor(Processor, Protocol):
    """A processor that also takes its records as columns (see the module docstring).

    ``process_batch`` applies one topic's batch as ``process`` applies records (and is
    all-or-nothing the same way); ``process`` stays the path of record-by-record retries.
    """

    def process_batch(self, batch: RecordBatch) -> list[Output]:
        """Apply one topic's decoded records; return outputs."""
        ...


class StatefulProcessor:
    """Base of store processors: state in partitioned RocksDB stores.

    Subclasses set ``name``, implement ``inputs`` and ``process`` (using
    ``self.state[partition]``), and may override ``tick``. With a ``cluster``, stores
    record their topics' ids, stale ones are rebuilt and empty ones are restored from the
    changelog (``streamlearn.streams.state.partitioned``); without one (unit tests),
    stores are used as found.
    """

    name = "processor"
    dead_letter_inputs: frozenset[str] | None = None

    def __init__(
        self,
        state_dir: Path,
        changelog_topic: str | None,
        cluster: Cluster | None = None,
        durability: Durability = Durability.SYNC,
    ) -> None:
        self.state = PartitionedState(state_dir / self.name, changelog_topic, durability)
        #: partition → the (topic, outcome) labels of its counts exported as gauges
        self._exported: dict[int, set[tuple[str, str]]] = {}
        self._cluster = cluster
        self._restore = RestoreSource(cluster) if cluster is not None and changelog_topic else None

    def inputs(self) -> Mapping[str, Decoder]:
        raise NotImplementedError

    def process(self, records: list[Record]) -> list[Output]:
        raise NotImplementedError

    def _provenance(self, partitions: list[int]) -> dict[int, Provenance]:
        if self._cluster is None:
            return {}
        inputs = list(self.inputs())
        topics = [*inputs, *([self.state.changelog_topic] if self.state.changelog_topic else [])]
        ids = self._cluster.topic_ids(topics)
        ends = self._cluster.log_ends([(t, p) for p in partitions for t in inputs])
        return {p: Provenance(ids, {t: ends[(t, p)] for t in inputs}) for p in partitions}

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        numbers = sorted({p for _, p in partitions})
        provenance = self._provenance(numbers)
        stored = {
            p: self.state.open(p, provenance.get(p), self._restore).offsets() for p in numbers
        }
        self._export(numbers)
        return {(t, p): stored[p].get(t, OFFSET_BEGINNING) for t, p in partitions}

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for p in {p for _, p in partitions}:
            for topic, outcome in self._exported.pop(p, ()):
                COMMITTED.remove(self.name, topic, str(p), outcome)
            self.state.close(p)

    def tally(self, counts: Mapping[tuple[str, int, str], int]) -> None:
        for (topic, p, outcome), n in counts.items():
            if p in self.state.partitions:
                self.state[p].count(f"{outcome}:{topic}", n)

    def counts(self, partition: int) -> dict[tuple[str, str], int]:
        """The committed counts of ``partition`` (``PartitionStore.counts``)."""
        return self.state[partition].counts()

    def _export(self, partitions: Iterable[int]) -> None:
        """Set the committed counts' gauge of ``partitions`` (after a commit or a restore)."""
        for p in partitions:
            exported = self._exported.setdefault(p, set())
            for (topic, outcome), n in self.counts(p).items():
                COMMITTED.labels(self.name, topic, str(p), outcome).set(n)
                exported.add((topic, outcome))

    def tick(self, now: float) -> list[Output]:
        return []

    @staticmethod
    def _by_partition(offsets: dict[TopicPartitionKey, int]) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for (topic, p), off in offsets.items():
            out.setdefault(p, {})[topic] = off
        return out

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        return [
            Output(topic, value, key, p, headers or None)
            for topic, p, key, value, headers in self.state.changelog(self._by_partition(offsets))
        ]

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self.state.commit(self._by_partition(offsets))
        self._export(self.state.partitions)

    def discard(self) -> None:
        self.state.discard()

    def finish(self) -> list[Output]:
        return self.tick(time.time())

    def close(self) -> None:
        self.state.close_all()
