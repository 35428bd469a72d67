"""The changelog: every committed write of a store, in intervals closed by an offsets record.

Every write is also emitted to a changelog topic (coalesced per key per commit, same
partition number), followed by an ``__offsets__/<epoch>`` control record with all the
partition's input offsets and topic ids. A commit is one *interval* of the changelog:
each write carries a ``commit`` header ``<epoch>:<seq>`` (``epoch``: new each time a
store is opened; ``seq``: its commit count) and the offsets record closes it. One
offsets key per epoch keeps that true under log compaction, which keeps the newest
record of each key. Control records (``is_control_key``) carry offsets, fences and
resets, never state: ``__fence__`` ends a restore's read, ``__reset__`` makes a restore
forget everything before it (``streamlearn.streams.state.restore``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import Message

from streamlearn.streams.state.store import PartitionStore

OFFSETS_KEY = "__offsets__"
FENCE_KEY = "__fence__"
RESET_KEY = "__reset__"
#: The header naming the interval (``<epoch>:<seq>``) a changelog write belongs to.
COMMIT_HEADER = "commit"

#: A changelog record to produce: (topic, partition, key, value or None for a tombstone,
#: headers).
ChangelogRecord = tuple[str, int, str, bytes | None, list[tuple[str, str | bytes | None]]]


def is_control_key(key: str | bytes | None) -> bool:
    """Changelog records that carry offsets, fences or resets, not state."""
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
    meta = {
        "offsets": {**store.offsets(), **offsets},
        "topic_ids": dict(topic_ids),
        "seq": store.seq,
    }
    out.append((topic, p, f"{OFFSETS_KEY}/{store.epoch}", orjson.dumps(meta), []))
    return out


def parse_offsets_record(
    raw: bytes | None,
) -> tuple[dict[str, int], dict[str, str] | None, int | None]:
    """(input offsets, topic ids, the interval's seq) of an offsets record."""
    obj: Any = orjson.loads(raw or b"{}")
    if isinstance(obj.get("offsets"), dict):
        offsets = {k: int(v) for k, v in obj["offsets"].items()}
        seq = obj.get("seq")
        return offsets, dict(obj.get("topic_ids") or {}), None if seq is None else int(seq)
    return {k: int(v) for k, v in obj.items()}, None, None  # before ids were recorded


def header(msg: Message, name: str) -> str | None:
    headers: Any = msg.headers() or ()
    for k, v in headers:
        if k == name and v is not None:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def closes(interval: str, epoch: str, seq: int | None) -> bool:
    """Whether the offsets record of ``epoch`` at ``seq`` completes ``interval``."""
    e, _, n = interval.partition(":")
    return e == epoch and seq is not None and int(n) <= seq
