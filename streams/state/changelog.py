"""The changelog: every committed write of a store, in intervals closed by an offsets record.

Every write is also emitted to a changelog topic (coalesced per key per commit, same
partition number), followed by an ``__offsets__/<epoch>`` control record with all the
partition's input offsets, topic ids and meta values (``PartitionStore.meta``). A commit
is one *interval* of the changelog: each write carries a ``commit`` header
``<epoch>:<seq>`` (``epoch``: the store opening's, ``seq``: its commit count) and the
offsets record closes it. One offsets key per epoch keeps that true under log compaction,
which keeps the newest record of each key.

**Claims.** A processor that opens a partition's store first writes a ``__claim__``
record with the store's epoch: from there on, the partition's changelog belongs to that
epoch, and an interval of any other epoch closed after the claim is a fenced writer's
(a worker that was frozen past its session time-out, lost the partition, and woke up
still writing): a restore ignores it (``streamlearn.streams.state.restore``). The claim
is also the fence a restore reads up to.

Control records (``is_control_key``) carry offsets, claims and resets, never state:
``__reset__`` makes a restore forget everything before it; ``__fence__`` (from older
versions, which read up to it) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Message

from streamlearn.streams.state.store import PartitionStore

OFFSETS_KEY = "__offsets__"
CLAIM_KEY = "__claim__"
FENCE_KEY = "__fence__"
RESET_KEY = "__reset__"
#: The header naming the interval (``<epoch>:<seq>``) a changelog write belongs to.
COMMIT_HEADER = "commit"

#: A changelog record to produce: (topic, partition, key, value or None for a tombstone,
#: headers).
ChangelogRecord = tuple[str, int, str, bytes | None, list[tuple[str, str | bytes | None]]]


def is_control_key(key: str | bytes | None) -> bool:
    """Changelog records that carry offsets, claims, fences or resets, not state."""
    if key is None:
        return False
    k = key.decode() if isinstance(key, bytes) else key
    return k.startswith("__")


def is_offsets_key(key: str) -> bool:
    """An offsets record's key (``__offsets__/<epoch>``, or ``__offsets__`` of old)."""
    return key == OFFSETS_KEY or key.startswith(OFFSETS_KEY + "/")


def interval(
    topic: str,
    store: PartitionStore,
    offsets: Mapping[str, int],
    topic_ids: Mapping[str, str],
) -> list[ChangelogRecord]:
    """The next interval of ``store``: its buffered writes (one per key), then every
    input's offset (not only this interval's: the last record is whole) with the topic
    ids they refer to."""
    store.seq += 1
    headers: list[tuple[str, str | bytes | None]] = [
        (COMMIT_HEADER, f"{store.epoch}:{store.seq}".encode())
    ]
    p = store.partition
    out: list[ChangelogRecord] = [(topic, p, k, v, headers) for k, v in store.pending().items()]
    record = {
        "offsets": {**store.offsets(), **offsets},
        "topic_ids": dict(topic_ids),
        "seq": store.seq,
        "meta": store.meta(),
    }
    out.append((topic, p, f"{OFFSETS_KEY}/{store.epoch}", orjson.dumps(record), []))
    return out


@dataclass(frozen=True)
class OffsetsRecord:
    """What an offsets record says: the input offsets after its interval, the topic ids
    they refer to (``None``: written before ids were recorded), the interval's ``seq``
    and the store's meta values."""

    offsets: dict[str, int]
    topic_ids: dict[str, str] | None
    seq: int | None
    meta: dict[str, Any]

    @classmethod
    def parse(cls, raw: bytes | None) -> OffsetsRecord:
        """Decode an offsets record's value (of any version)."""
        obj: Any = orjson.loads(raw or b"{}")
        if isinstance(obj.get("offsets"), dict):
            seq = obj.get("seq")
            return cls(
                {k: int(v) for k, v in obj["offsets"].items()},
                dict(obj.get("topic_ids") or {}),
                None if seq is None else int(seq),
                dict(obj.get("meta") or {}),
            )
        return cls({k: int(v) for k, v in obj.items()}, None, None, {})  # no ids yet


def offsets_epoch(key: str) -> str:
    """The epoch of an offsets record's key (``""`` for the old, epoch-less key)."""
    return key[len(OFFSETS_KEY) + 1 :]


def header(msg: Message, name: str) -> str | None:
    """The value of a record's header ``name`` (text), or ``None``."""
    headers: Any = msg.headers() or ()
    for k, v in headers:
        if k == name and v is not None:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def closes(interval: str, epoch: str, seq: int | None) -> bool:
    """Whether the offsets record of ``epoch`` at ``seq`` completes ``interval``."""
    e, _, n = interval.partition(":")
    return e == epoch and seq is not None and int(n) <= seq
