"""Partitioned RocksDB state with the input offsets it reflects, what it was built from,
and its changelog.

One rocksdict database per input partition. A commit interval's writes are buffered,
then written together with the input offsets (and the ids of the topics the state was
built from) in one ``WriteBatch``, through RocksDB's write-ahead log, synced: state and
offsets never disagree, and a kill -9 loses nothing that was committed (measured by
``bench/bench_wal.py``: one fsync per store per commit interval costs a few percent).

**One source of truth.** The offsets stored with the state are where a processor
resumes; a consumer group's committed offset is never used. A store with no offsets
(new, or its directory lost) is rebuilt from its changelog topic, offsets included; with
no changelog either, its partition is read from the beginning.

**Provenance.** Every store records the ids of its input and changelog topics
(``Provenance``). On open, a store whose recorded id differs from the topic's id now (the
topic was recreated, or this is another cluster), or whose stored offset lies beyond the
partition's true log end, is stale: it is wiped, with one warning line, and rebuilt.

**The changelog.** Every write is also emitted to a changelog topic (coalesced per key
per commit, same partition number), followed by an ``__offsets__/<epoch>`` control record
with all the partition's input offsets and topic ids. A commit is one *interval* of the
changelog: each write carries a ``commit`` header ``<epoch>:<seq>`` (``epoch``: new each
time a store is opened; ``seq``: its commit count) and the offsets record closes it. A
restore reads the partition up to a fence record it writes itself (the embedded broker's
reported end offsets are wrong) and applies an interval's writes only once its offsets
record has come: a process killed while producing leaves a prefix of an interval in the
changelog, which is never restored (its inputs are read again from the offsets before
it). One offsets key per epoch keeps that true under log compaction, which keeps the
newest record of each key. An ``__reset__`` control record, written when stale state
was found in the changelog, makes a restore forget everything before it.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import Cluster, follow, reader

log = logging.getLogger(__name__)

OFFSETS_KEY = "__offsets__"
FENCE_KEY = "__fence__"
RESET_KEY = "__reset__"
_OFFSET_PREFIX = b"\x00offset/"
_IDENTITY_KEY = b"\x00identity"


def is_control_key(key: str | bytes | None) -> bool:
    """Changelog records that carry offsets, fences or resets, not state."""
    if key is None:
        return False
    k = key.decode() if isinstance(key, bytes) else key
    return k.startswith("__")


#: A changelog record to produce: (topic, partition, key, value or None for a tombstone,
#: headers).
ChangelogRecord = tuple[str, int, str, bytes | None, list[tuple[str, str | bytes | None]]]
#: The header naming the interval (``<epoch>:<seq>``) a changelog write belongs to.
COMMIT_HEADER = "commit"


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
        #: changelog intervals: this opening's epoch and its commit count
        self.epoch = uuid.uuid4().hex[:16]
        self.seq = 0

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

    def discard(self) -> None:
        """Drop the buffered writes (the batch that made them failed)."""
        self._pending = {}

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
        if self._identity is not None and (self._pending or offsets):
            wb.put(_IDENTITY_KEY, orjson.dumps(self._identity))  # with the first data
            self._identity = None
        self._db.write(wb, self._commit_opts)
        self._pending = {}

    def close(self) -> None:
        """Close the database (buffered writes are dropped)."""
        self._pending = {}
        self._db.close()


class PartitionedState:
    """The stores of one processor, one per assigned input partition, plus the changelog."""

    def __init__(
        self,
        root: Path,
        changelog_topic: str | None,
        durability: Durability = Durability.SYNC,
    ) -> None:
        self.root = root
        self.changelog_topic = changelog_topic
        self.durability = durability
        self._stores: dict[int, PartitionStore] = {}
        self._ids: dict[int, dict[str, str]] = {}

    def __getitem__(self, partition: int) -> PartitionStore:
        try:
            return self._stores[partition]
        except KeyError:
            raise StreamsError(f"partition {partition} is not assigned to this store") from None

    @property
    def partitions(self) -> list[int]:
        """The partitions open right now."""
        return sorted(self._stores)

    def path(self, partition: int) -> Path:
        """Where the store of ``partition`` lives."""
        return self.root / f"p{partition:04d}"

    def open(
        self,
        partition: int,
        provenance: Provenance | None = None,
        restore_from: RestoreSource | None = None,
    ) -> PartitionStore:
        """Open the store of ``partition``: wipe it when stale, rebuild it from the
        changelog when empty (see the module docstring)."""
        if partition in self._stores:
            return self._stores[partition]
        store = PartitionStore(self.path(partition), partition, self.durability)
        if provenance is not None and not store.is_empty():
            why = provenance.stale(store.identity(), store.offsets())
            if why:
                log.warning(
                    "stale state at %s partition=%d: %s; wiping it and rebuilding",
                    store.path,
                    partition,
                    why,
                )
                store = self._wipe(store)
        if not store.is_empty() and restore_from is not None and self.changelog_topic:
            # Another worker (or this one before a crash) may have gone further with this
            # partition: then the changelog has it, and outputs are not emitted again.
            latest = restore_from.latest_offsets(self.changelog_topic, partition)
            local = store.offsets()
            if latest and any(off > local.get(t, 0) for t, off in latest.items()):
                log.info(
                    "store of partition=%d is behind its changelog topic=%s (local %s, "
                    "changelog %s): restoring it",
                    partition,
                    self.changelog_topic,
                    local,
                    latest,
                )
                store = self._wipe(store)
        if store.is_empty() and restore_from is not None and self.changelog_topic:
            restored = restore_from.restore(self.changelog_topic, store)
            why = (
                None
                if provenance is None
                else provenance.stale(restored.topic_ids, store.offsets())
            )
            if why and not store.is_empty():
                log.warning(
                    "stale changelog topic=%s partition=%d: %s; starting over from the "
                    "beginning of the inputs",
                    self.changelog_topic,
                    partition,
                    why,
                )
                store = self._wipe(store)
                restore_from.reset(self.changelog_topic, partition)
        if provenance is not None:
            self._ids[partition] = dict(provenance.topic_ids)
            store.stamp(provenance.topic_ids)
        self._stores[partition] = store
        return store

    def _wipe(self, store: PartitionStore) -> PartitionStore:
        store.close()
        shutil.rmtree(store.path, ignore_errors=True)
        return PartitionStore(store.path, store.partition, self.durability)

    def close(self, partition: int) -> None:
        """Close the store of a revoked partition."""
        store = self._stores.pop(partition, None)
        self._ids.pop(partition, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        """Close every store."""
        for p in list(self._stores):
            self.close(p)

    def discard(self) -> None:
        """Drop buffered writes in every store."""
        for s in self._stores.values():
            s.discard()

    def changelog(self, offsets: Mapping[int, Mapping[str, int]]) -> list[ChangelogRecord]:
        """Changelog records for the buffered writes (one per key), then all the
        partition's offsets with the topic ids they refer to."""
        if not self.changelog_topic:
            return []
        topic = self.changelog_topic
        out: list[ChangelogRecord] = []
        for p, store in self._stores.items():
            pending = store.pending()
            if p not in offsets and not pending:
                continue
            store.seq += 1
            headers: list[tuple[str, str | bytes | None]] = [
                (COMMIT_HEADER, f"{store.epoch}:{store.seq}".encode())
            ]
            out.extend((topic, p, k, v, headers) for k, v in pending.items())
            # every input's offset, not only this interval's: the last record is whole
            meta = {
                "offsets": {**store.offsets(), **offsets.get(p, {})},
                "topic_ids": self._ids.get(p, {}),
                "seq": store.seq,
            }
            out.append((topic, p, f"{OFFSETS_KEY}/{store.epoch}", orjson.dumps(meta), []))
        return out

    def commit(self, offsets: Mapping[int, Mapping[str, int]]) -> None:
        """Commit every store with its partition's offsets."""
        for p, store in self._stores.items():
            store.commit(offsets.get(p, {}))


@dataclass(frozen=True)
class Restored:
    """What a changelog restore applied."""

    records: int
    topic_ids: dict[str, str] | None


def _offsets_record(
    raw: bytes | None,
) -> tuple[dict[str, int], dict[str, str] | None, int | None]:
    """(input offsets, topic ids, the interval's seq) of an offsets record."""
    obj: Any = orjson.loads(raw or b"{}")
    if isinstance(obj.get("offsets"), dict):
        offsets = {k: int(v) for k, v in obj["offsets"].items()}
        seq = obj.get("seq")
        return offsets, dict(obj.get("topic_ids") or {}), None if seq is None else int(seq)
    return {k: int(v) for k, v in obj.items()}, None, None  # before ids were recorded


def _header(msg: Message, name: str) -> str | None:
    headers: Any = msg.headers() or ()
    for k, v in headers:
        if k == name and v is not None:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def _closes(interval: str, epoch: str, seq: int | None) -> bool:
    """Whether the offsets record of ``epoch`` at ``seq`` completes ``interval``."""
    e, _, n = interval.partition(":")
    return e == epoch and seq is not None and int(n) <= seq


class RestoreSource:
    """Rebuilds a partition store from its changelog topic, reading up to a fence."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._producer = cluster.producer()

    def latest_offsets(
        self, topic: str, partition: int, window: int = 5000, timeout_s: float = 30.0
    ) -> dict[str, int] | None:
        """The input offsets of the newest offsets record among the last ``window``
        records of the changelog partition (``None``: none there)."""
        end = self._cluster.log_ends([(topic, partition)])[(topic, partition)]
        if end == 0:
            return None
        latest: dict[str, int] | None = None

        def scan(msgs: Sequence[Message]) -> bool:
            nonlocal latest
            for msg in msgs:
                key = (msg.key() or b"").decode(errors="replace")
                if key == OFFSETS_KEY or key.startswith(OFFSETS_KEY + "/"):
                    latest = _offsets_record(msg.value())[0]
                if (msg.offset() or 0) >= end - 1:
                    return True
            return False

        consumer = reader(self._cluster, topic, [partition], start=max(0, end - window))
        try:
            follow(consumer, scan, timeout_s=timeout_s, what=f"tail of topic={topic}")
        finally:
            consumer.close()
        return latest

    def reset(self, topic: str, partition: int) -> None:
        """Write a reset marker: later restores forget everything before it."""
        self._producer.produce(topic, b"", RESET_KEY, partition=partition)
        if self._producer.flush(10):
            raise StreamsError(
                f"reset marker to topic={topic} partition={partition} not acknowledged"
            )

    def restore(self, topic: str, store: PartitionStore, timeout_s: float = 120.0) -> Restored:
        """Replay ``topic``'s partition into the (empty) ``store``, offsets included; only
        intervals whose offsets record came are applied (see the module docstring)."""
        fence = uuid.uuid4().hex.encode()
        self._producer.produce(topic, fence, FENCE_KEY, partition=store.partition)
        if self._producer.flush(10):
            raise StreamsError(
                f"fence to topic={topic} partition={store.partition} not acknowledged"
            )
        applied = 0
        offsets: dict[str, int] = {}
        ids: dict[str, str] | None = None
        # interval "<epoch>:<seq>" → its writes, until its offsets record comes
        waiting: dict[str, list[tuple[str, bytes | None]]] = {}

        def write(key: str, raw: bytes | None) -> None:
            nonlocal applied
            if raw is None:
                store.delete(key)
            else:
                store.put(key, raw)
            applied += 1

        def apply(msgs: Sequence[Message]) -> bool:
            nonlocal applied, offsets, ids, waiting
            for msg in msgs:
                key = (msg.key() or b"").decode()
                raw = msg.value()
                if key == FENCE_KEY:
                    if raw == fence:
                        return True
                elif key == RESET_KEY:
                    store.discard()
                    applied, offsets, ids, waiting = 0, {}, None, {}
                elif key == OFFSETS_KEY or key.startswith(OFFSETS_KEY + "/"):
                    more, ids, seq = _offsets_record(raw)
                    offsets.update(more)
                    epoch = key[len(OFFSETS_KEY) + 1 :]
                    for done in [i for i in waiting if _closes(i, epoch, seq)]:
                        for k, v in waiting.pop(done):
                            write(k, v)
                else:
                    interval = _header(msg, COMMIT_HEADER)
                    if interval is None:  # written before intervals were recorded
                        write(key, raw)
                    else:
                        waiting.setdefault(interval, []).append((key, raw))
            return False

        consumer = reader(self._cluster, topic, [store.partition])
        try:
            done = follow(consumer, apply, timeout_s=timeout_s, what=f"restore of topic={topic}")
        finally:
            consumer.close()
        if not done:
            store.discard()
            raise StreamsError(
                f"changelog restore of topic={topic} partition={store.partition} "
                f"did not reach its fence within {timeout_s}s"
            )
        if waiting:
            log.warning(
                "restore of topic=%s partition=%d dropped %d unfinished interval(s) (%d "
                "writes of a process that died while producing)",
                topic,
                store.partition,
                len(waiting),
                sum(len(w) for w in waiting.values()),
            )
        if ids is not None:
            store.stamp(ids)
        store.commit(offsets)
        log.info(
            "restored topic=%s partition=%d records=%d offsets=%s",
            topic,
            store.partition,
            applied,
            offsets,
        )
        return Restored(applied, ids)
