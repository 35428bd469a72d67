"""One input partition's state in RocksDB, with the input offsets it reflects.

One rocksdict database per input partition. A commit interval's writes are buffered,
then written together with the input offsets (and the ids of the topics the state was
built from) in one ``WriteBatch``, through RocksDB's write-ahead log, synced: state and
offsets never disagree, and a kill -9 loses nothing that was committed (measured by
``bench/bench_wal.py``: one fsync per store per commit interval costs a few percent).

**One source of truth.** The offsets stored with the state are where a processor
resumes; a consumer group's committed offset is never used.

**Meta.** Besides state entries, a store keeps a few named JSON values committed with its
offsets (``meta``): figures kept exactly with the state (records applied, dead letters,
examples emitted) and a processor's bookkeeping. They travel in the changelog's offsets
records, so a restore brings them back with the offsets.

**Epochs.** Each opening of a store has an ``epoch`` (a random id); a commit records it
(``last_epoch``), so a later opening knows which opening wrote the state
(``streamlearn.streams.state.partitioned`` compares it with the changelog's claims).

**Provenance.** Every store records the ids of its input and changelog topics
(``Provenance``). A store whose recorded id differs from the topic's id now (the topic
was recreated, or this is another cluster), or whose stored offset lies beyond the
partition's true log end, is stale (``streamlearn.streams.state.partitioned`` wipes it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

_OFFSET_PREFIX = b"\x00offset/"
_IDENTITY_KEY = b"\x00identity"
_EPOCH_KEY = b"\x00epoch"
_META_PREFIX = b"\x00meta/"
#: What a store processor counts with its state (``PartitionStore.counts``): input records
#: applied, dead-lettered, or skipped (another processor dead-letters them), and records
#: emitted (the joiner's examples).
OUTCOMES = ("applied", "dead_lettered", "skipped", "emitted")


class Durability(StrEnum):
    """How a store's commit reaches the disk."""

    #: Write-ahead log, fsync'd at each commit: survives kill -9 and power loss.
    SYNC = "sync"
    #: Write-ahead log in the page cache: survives kill -9, not a power loss.
    WAL = "wal"
    #: No write-ahead log: a crash rolls state *and* offsets back to the last memtable
    #: flush (consistent, but everything since is read and applied again).
    NONE = "none"


@dataclass(frozen=True)
class Provenance:
    """What a partition's state is built from, as the cluster says now.

    ``topic_ids``: ids of the input and changelog topics (absent: the cluster gave none).
    ``log_ends``: the true end offset of each input topic's partition of this store.
    """

    topic_ids: Mapping[str, str] = field(default_factory=dict)
    log_ends: Mapping[str, int] = field(default_factory=dict)

    def stale(
        self, recorded_ids: Mapping[str, str] | None, offsets: Mapping[str, int]
    ) -> str | None:
        """Why state recorded with ``recorded_ids`` at ``offsets`` is stale, or ``None``."""
        if recorded_ids is None:
            return "it records no topic ids (written by an older version)"
        for topic, now in sorted(self.topic_ids.items()):
            was = recorded_ids.get(topic)
            if was is not None and was != now:
                return f"topic={topic} had id {was}, now {now} (recreated, or another cluster)"
        for topic, off in sorted(offsets.items()):
            end = self.log_ends.get(topic)
            if end is not None and off > end:
                return f"topic={topic} offset {off} is beyond the partition's log end {end}"
        return None


class PartitionStore:
    """The state of one input partition: reads see this interval's buffered writes."""

    def __init__(self, path: Path, partition: int, durability: Durability = Durability.SYNC):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partition = partition
        self.durability = durability
        self._db = Rdict(str(path), Options(raw_mode=True))
        self._commit_opts = WriteOptions()
        if durability is Durability.NONE:
            self._commit_opts.disable_wal = True  # type: ignore[assignment,method-assign]
        self._commit_opts.sync = durability is Durability.SYNC
        self._pending: dict[str, bytes | None] = {}
        self._identity: dict[str, str] | None = None
        self._meta = self._read_meta()
        self._pending_meta: dict[str, Any] = {}
        #: changelog intervals: this opening's epoch and its commit count
        self.epoch = uuid.uuid4().hex[:16]
        self.seq = 0

    def _read_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        it = self._db.iter()
        it.seek(_META_PREFIX)
        while it.valid() and bytes(it.key()).startswith(_META_PREFIX):
            out[bytes(it.key())[len(_META_PREFIX) :].decode()] = orjson.loads(bytes(it.value()))
            it.next()
        return out

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, including writes not yet committed."""
        if key in self._pending:
            return self._pending[key]
        v = self._db.get(key.encode())
        return None if v is None else bytes(v)

    def put(self, key: str, value: bytes) -> None:
        """Buffer a write; it lands with the next ``commit``."""
        self._pending[key] = value

    def delete(self, key: str) -> None:
        """Buffer a delete; it lands with the next ``commit``."""
        self._pending[key] = None

    def items(self, prefix: str = "") -> list[tuple[str, bytes]]:
        """Committed state entries whose key starts with ``prefix``, pending writes applied
        (offsets and identity are not state entries)."""
        out: dict[str, bytes | None] = {}
        it = self._db.iter()
        it.seek(prefix.encode())
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(prefix.encode()):
                break
            if not k.startswith(b"\x00"):
                out[k.decode()] = bytes(it.value())
            it.next()
        out.update((k, v) for k, v in self._pending.items() if k.startswith(prefix))
        return sorted((k, v) for k, v in out.items() if v is not None)

    def offsets(self) -> dict[str, int]:
        """Next offset to read per input topic, as committed with the state."""
        out: dict[str, int] = {}
        it = self._db.iter()
        it.seek(_OFFSET_PREFIX)
        while it.valid() and bytes(it.key()).startswith(_OFFSET_PREFIX):
            out[bytes(it.key())[len(_OFFSET_PREFIX) :].decode()] = int(bytes(it.value()))
            it.next()
        return out

    def identity(self) -> dict[str, str] | None:
        """The topic ids this state was built from, as committed (``None``: unrecorded)."""
        raw = self._db.get(_IDENTITY_KEY)
        return None if raw is None else dict(orjson.loads(bytes(raw)))

    def last_epoch(self) -> str | None:
        """The epoch of the opening that last committed here (``None``: unrecorded)."""
        raw = self._db.get(_EPOCH_KEY)
        return None if raw is None else bytes(raw).decode()

    def meta(self) -> dict[str, Any]:
        """The named values kept with the offsets, pending ones included."""
        return {**self._meta, **self._pending_meta}

    def set_meta(self, name: str, value: Any) -> None:
        """Buffer a named JSON value; it lands with the next ``commit``."""
        self._pending_meta[name] = value

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the count ``name`` (a meta value), with the next ``commit``."""
        if n:
            self.set_meta(name, int(self.meta().get(name, 0)) + n)

    def counts(self) -> dict[tuple[str, str], int]:
        """(topic, outcome) → records: the counts among the meta values (named
        ``<outcome>:<topic>``, ``OUTCOMES``), pending ones included."""
        out = {}
        for name, value in self.meta().items():
            outcome, sep, topic = name.partition(":")
            if sep and outcome in OUTCOMES and isinstance(value, int):
                out[(topic, outcome)] = value
        return out

    def is_empty(self) -> bool:
        """True when nothing was ever committed here."""
        it = self._db.iter()
        it.seek_to_first()
        return not it.valid()

    def stamp(self, topic_ids: Mapping[str, str]) -> None:
        """Record ``topic_ids`` as what this state is built from, with the next commit."""
        self._identity = dict(topic_ids)

    def pending(self) -> dict[str, bytes | None]:
        """The writes buffered since the last commit."""
        return self._pending

    def changed(self) -> bool:
        """Whether writes or meta values are buffered since the last commit."""
        return bool(self._pending or self._pending_meta)

    def discard(self) -> None:
        """Drop the buffered writes (the batch that made them failed)."""
        self._pending = {}
        self._pending_meta = {}

    def commit(self, offsets: Mapping[str, int]) -> None:
        """Write buffered state and ``offsets`` (next offset per topic) atomically."""
        wb = WriteBatch(raw_mode=True)
        for k, v in self._pending.items():
            if v is None:
                wb.delete(k.encode())
            else:
                wb.put(k.encode(), v)
        for topic, off in offsets.items():
            wb.put(_OFFSET_PREFIX + topic.encode(), str(off).encode())
        for name, value in self._pending_meta.items():
            wb.put(_META_PREFIX + name.encode(), orjson.dumps(value))
        if self._identity is not None and (self._pending or offsets):
            wb.put(_IDENTITY_KEY, orjson.dumps(self._identity))  # with the first data
            self._identity = None
        if self._pending or offsets or self._pending_meta:
            wb.put(_EPOCH_KEY, self.epoch.encode())
        self._db.write(wb, self._commit_opts)
        self._pending = {}
        self._meta.update(self._pending_meta)
        self._pending_meta = {}

    def close(self) -> None:
        """Close the database (buffered writes are dropped)."""
        self._pending = {}
        self._pending_meta = {}
        self._db.close()
