"""``RestoreSource``: a partition store rebuilt from its changelog, read up to a fence.

A restore reads the partition up to a fence record it writes itself (the embedded
broker's reported end offsets are wrong) and applies an interval's writes only once its
offsets record has come (``streamlearn.streams.state.changelog``): a process killed
while producing leaves a prefix of an interval in the changelog, which is never restored
(its inputs are read again from the offsets before it). An ``__reset__`` control record,
written when stale state was found in the changelog, makes a restore forget everything
before it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import Cluster, follow, reader
from streamlearn.streams.state.changelog import (
    COMMIT_HEADER,
    FENCE_KEY,
    OFFSETS_KEY,
    RESET_KEY,
    closes,
    header,
    is_offsets_key,
    parse_offsets_record,
)
from streamlearn.streams.state.store import PartitionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """What a changelog restore applied."""

    records: int
    topic_ids: dict[str, str] | None


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
                if is_offsets_key(key):
                    latest = parse_offsets_record(msg.value())[0]
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
                elif is_offsets_key(key):
                    more, ids, seq = parse_offsets_record(raw)
                    offsets.update(more)
                    epoch = key[len(OFFSETS_KEY) + 1 :]
                    for done in [i for i in waiting if closes(i, epoch, seq)]:
                        for k, v in waiting.pop(done):
                            write(k, v)
                else:
                    interval = header(msg, COMMIT_HEADER)
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
