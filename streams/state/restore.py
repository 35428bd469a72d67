"""``RestoreSource``: claims on a changelog partition, and a store rebuilt from it.

Before a processor uses a partition's store it writes a claim (``claim``: the store's
epoch, see ``streamlearn.streams.state.changelog``) and reads the changelog up to that
claim, never up to the broker's reported end offsets (the embedded broker's are wrong):

- ``tail``: the last records before the claim say who wrote the partition last, so a
  store kept on disk is used only when its own epoch wrote last, and not behind;
- ``restore``: the whole partition into an empty store. An interval's writes are applied
  once its offsets record has come (a process killed while producing leaves a prefix of
  an interval, which is never restored: its inputs are read again from the offsets
  before it), and only if its epoch holds the newest claim when that record comes: the
  late intervals of a fenced writer are ignored. An ``__reset__`` record, written when
  stale state was found in the changelog, makes a restore forget everything before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from streamlearn.streams.errors import KafkaError, StreamsError
from streamlearn.streams.kafka.clients import Cluster, follow, reader
from streamlearn.streams.state.changelog import (
    CLAIM_KEY,
    COMMIT_HEADER,
    RESET_KEY,
    OffsetsRecord,
    closes,
    header,
    is_control_key,
    is_offsets_key,
    offsets_epoch,
)
from streamlearn.streams.state.store import PartitionStore

log = logging.getLogger(__name__)

#: Gets each record read before a claim: (its key, the message).
_Handler = Callable[[str, Message], None]


@dataclass(frozen=True)
class Restored:
    """What a changelog restore applied, and the fenced intervals it ignored."""

    records: int
    topic_ids: dict[str, str] | None
    fenced: int = 0


@dataclass(frozen=True)
class Tail:
    """The end of a changelog partition before a claim.

    ``claimant``: the epoch of the newest earlier claim (``None``: none in the window);
    ``writer`` and ``offsets``: the epoch and the input offsets of the newest offsets
    record that counts (the claimant's; any epoch's when no claim was seen).
    """

    claimant: str | None = None
    writer: str | None = None
    offsets: dict[str, int] | None = None


class RestoreSource:
    """Claims changelog partitions and rebuilds stores from them."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._producer = cluster.producer()

    def _write(self, topic: str, partition: int, key: str, value: bytes, what: str) -> None:
        failed: list[str] = []

        def delivered(err: object, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        self._producer.produce(topic, value, key, partition=partition, on_delivery=delivered)
        if self._producer.flush(10) or failed:
            raise KafkaError(
                f"{what} to topic={topic} partition={partition} not acknowledged"
                + (f": {failed[0]}" if failed else "")
            )

    def claim(self, topic: str, partition: int, epoch: str) -> None:
        """Write a claim: the partition's changelog belongs to ``epoch`` from here on."""
        self._write(topic, partition, CLAIM_KEY, epoch.encode(), "claim")

    def reset(self, topic: str, partition: int) -> None:
        """Write a reset marker: later restores forget everything before it."""
        self._write(topic, partition, RESET_KEY, b"", "reset marker")

    def _read_to_claim(
        self,
        topic: str,
        partition: int,
        epoch: str,
        handle: _Handler,
        start: int | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        """Hand every record before the claim of ``epoch`` to ``handle``."""

        def apply(msgs: Sequence[Message]) -> bool:
            for msg in msgs:
                key = (msg.key() or b"").decode(errors="replace")
                if key == CLAIM_KEY and (msg.value() or b"").decode() == epoch:
                    return True
                handle(key, msg)
            return False

        kw = {} if start is None else {"start": start}
        consumer = reader(self._cluster, topic, [partition], **kw)
        try:
            done = follow(consumer, apply, timeout_s=timeout_s, what=f"changelog topic={topic}")
        finally:
            consumer.close()
        if not done:
            raise StreamsError(
                f"reading topic={topic} partition={partition} did not reach its claim "
                f"{epoch} within {timeout_s}s"
            )

    def tail(self, topic: str, partition: int, epoch: str, window: int = 5000) -> Tail:
        """Who wrote the partition last before the claim of ``epoch`` (see ``Tail``),
        from its last ``window`` records."""
        end = self._cluster.log_ends([(topic, partition)])[(topic, partition)]
        claimant: str | None = None
        newest: dict[str | None, tuple[str, dict[str, int]]] = {}

        def handle(key: str, msg: Message) -> None:
            nonlocal claimant
            if key == CLAIM_KEY:
                claimant = (msg.value() or b"").decode()
            elif is_offsets_key(key):
                e = offsets_epoch(key)
                found = (e, OffsetsRecord.parse(msg.value()).offsets)
                newest[None] = found
                newest[e] = found

        self._read_to_claim(topic, partition, epoch, handle, start=max(0, end - window))
        writer, offsets = newest.get(claimant, (None, None))
        return Tail(claimant, writer, offsets)

    def restore(self, topic: str, store: PartitionStore, timeout_s: float = 120.0) -> Restored:
        """Replay ``topic``'s partition into the (empty) ``store``, offsets and meta
        included, up to the claim of ``store.epoch`` (see the module docstring)."""
        applied = 0
        fenced: list[str] = []
        offsets: dict[str, int] = {}
        ids: dict[str, str] | None = None
        meta: dict[str, object] = {}
        claimant: str | None = None
        # interval "<epoch>:<seq>" → its writes, until its offsets record comes
        waiting: dict[str, list[tuple[str, bytes | None]]] = {}

        def write(key: str, raw: bytes | None) -> None:
            nonlocal applied
            if raw is None:
                store.delete(key)
            else:
                store.put(key, raw)
            applied += 1

        def handle(key: str, msg: Message) -> None:
            nonlocal applied, offsets, ids, meta, claimant, waiting
            if key == CLAIM_KEY:
                claimant = (msg.value() or b"").decode()
            elif key == RESET_KEY:
                store.discard()
                applied, offsets, ids, meta, waiting = 0, {}, None, {}, {}
            elif is_offsets_key(key):
                epoch = offsets_epoch(key)
                record = OffsetsRecord.parse(msg.value())
                done = [i for i in waiting if closes(i, epoch, record.seq)]
                if claimant is not None and epoch != claimant:
                    fenced.extend(done)  # a fenced writer's interval, closed late
                    for i in done:
                        waiting.pop(i)
                    return
                offsets.update(record.offsets)
                ids, meta = record.topic_ids, {**meta, **record.meta}
                for i in done:
                    for k, v in waiting.pop(i):
                        write(k, v)
            elif not is_control_key(key):
                interval = header(msg, COMMIT_HEADER)
                if interval is None:  # written before intervals were recorded
                    write(key, msg.value())
                else:
                    waiting.setdefault(interval, []).append((key, msg.value()))

        try:
            self._read_to_claim(topic, store.partition, store.epoch, handle, timeout_s=timeout_s)
        except StreamsError:
            store.discard()
            raise
        if waiting:
            log.warning(
                "restore of topic=%s partition=%d dropped %d unfinished interval(s) (%d "
                "writes of a process that died while producing)",
                topic,
                store.partition,
                len(waiting),
                sum(len(w) for w in waiting.values()),
            )
        if fenced:
            log.warning(
                "restore of topic=%s partition=%d ignored %d interval(s) of fenced writers "
                "(closed after another claim): %s",
                topic,
                store.partition,
                len(fenced),
                ", ".join(fenced[:5]),
            )
        if ids is not None:
            store.stamp(ids)
        for name, value in meta.items():
            store.set_meta(name, value)
        store.commit(offsets)
        log.info(
            "restored topic=%s partition=%d records=%d offsets=%s",
            topic,
            store.partition,
            applied,
            offsets,
        )
        return Restored(applied, ids, len(fenced))
