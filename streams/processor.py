"""The batch-function protocol every stream processor implements, and its records.

A processor is plain Python: decoded records in, output records out, with state kept in
a ``PartitionedState``. It runs without a broker in unit tests and under either runtime
(``runtime.MicroBatchRuntime`` on confluent-kafka, or ``faust_runtime`` on faust workers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from streams.state import PartitionedState, RestoreSource

TopicPartitionKey = tuple[str, int]
Decoder = Callable[[bytes | None], Any]


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


class Output(msgspec.Struct, frozen=True, gc=False):
    """A record to produce. ``partition`` pins it (changelogs); else the key decides."""

    topic: str
    value: bytes | None
    key: str | bytes | None = None
    partition: int | None = None


class BatchProcessor(Protocol):
    """What a runtime needs from a processor.

    The runtime calls, per micro-batch: ``process`` (and ``tick``), produces the returned
    outputs plus ``prepare``'s (changelog) outputs, waits until all are acknowledged,
    then ``commit``s state together with the offsets. A batch that raises is retried
    record by record after ``discard``; a record that still raises is dead-lettered.
    """

    name: str
    #: Input topics whose undecodable records this processor dead-letters. When several
    #: processors read one topic, exactly one owns its dead letters; the others skip
    #: such records (counted). ``None``: all inputs.
    dead_letter_inputs: frozenset[str] | None

    def inputs(self) -> Mapping[str, Decoder]:
        """Input topic → decoder (raises ``ContractError`` for a bad record)."""
        ...

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Open state for new partitions; return where to resume (absent: committed)."""
        ...

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        """Close state of partitions taken away."""
        ...

    def process(self, records: list[Record]) -> list[Output]:
        """Apply a batch; buffer state writes; return outputs."""
        ...

    def tick(self, now: float) -> list[Output]:
        """Time-driven work (closing windows, snapshots); called once per poll."""
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

    def finish(self) -> list[Output]:
        """Last outputs on a clean stop (e.g. a final snapshot); state is committed after."""
        ...

    def close(self) -> None:
        """Release everything."""
        ...


class StatefulProcessor:
    """Base for processors whose state lives in partitioned RocksDB stores.

    Subclasses set ``name``, implement ``inputs`` and ``process`` (using
    ``self.state[partition]``), and may override ``tick``.
    """

    name = "processor"
    dead_letter_inputs: frozenset[str] | None = None

    def __init__(
        self,
        state_dir: Path,
        changelog_topic: str | None,
        restore: RestoreSource | None = None,
    ) -> None:
        self.state = PartitionedState(state_dir / self.name, changelog_topic)
        self._restore = restore

    def inputs(self) -> Mapping[str, Decoder]:
        raise NotImplementedError

    def process(self, records: list[Record]) -> list[Output]:
        raise NotImplementedError

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        starts: dict[TopicPartitionKey, int] = {}
        for topic, p in partitions:
            stored = self.state.open(p, self._restore).offsets()
            if topic in stored:
                starts[(topic, p)] = stored[topic]
        return starts

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for p in {p for _, p in partitions}:
            self.state.close(p)

    def tick(self, now: float) -> list[Output]:
        return []

    def _by_partition(self, offsets: dict[TopicPartitionKey, int]) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for (topic, p), off in offsets.items():
            out.setdefault(p, {})[topic] = off
        return out

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        return [
            Output(topic, value, key, p)
            for topic, p, key, value in self.state.changelog(self._by_partition(offsets))
        ]

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self.state.commit(self._by_partition(offsets))

    def discard(self) -> None:
        self.state.discard()

    def finish(self) -> list[Output]:
        return self.tick(time.time())

    def close(self) -> None:
        self.state.close_all()
