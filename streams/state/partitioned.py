"""``PartitionedState``: the stores of one processor, one per assigned input partition.

On open, a stale store (``streamlearn.streams.state.store.Provenance``) is wiped, with
one warning line, and rebuilt. With a changelog, the opening claims the partition's
changelog (``streamlearn.streams.state.changelog``); a store kept on disk is used only
when its own last opening wrote the changelog last and it is not behind (another worker
had the partition meanwhile, or this one died between producing and committing);
otherwise, or when it has no offsets (new, or its directory lost), it is rebuilt from the
changelog, offsets and meta included (``streamlearn.streams.state.restore``). With no
changelog either, its partition is read from the beginning. At each commit the stores'
buffered writes become changelog intervals, then are committed with the input offsets.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from streamlearn.streams.errors import StreamsError
from streamlearn.streams.state.changelog import ChangelogRecord, interval
from streamlearn.streams.state.restore import RestoreSource, Tail
from streamlearn.streams.state.store import Durability, PartitionStore, Provenance

log = logging.getLogger(__name__)


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
        topic = self.changelog_topic
        if restore_from is not None and topic:
            # The partition's changelog is this opening's from here on (a claim); a store
            # kept on disk is used only if it wrote the changelog last and is not behind.
            restore_from.claim(topic, partition, store.epoch)
            if not store.is_empty():
                why = _superseded(store, restore_from.tail(topic, partition, store.epoch))
                if why:
                    log.info(
                        "store of partition=%d is not the newest state of its changelog "
                        "topic=%s: %s; restoring it",
                        partition,
                        topic,
                        why,
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
        """An empty store in the place of ``store``, with its epoch (and claim)."""
        store.close()
        shutil.rmtree(store.path, ignore_errors=True)
        fresh = PartitionStore(store.path, store.partition, self.durability)
        fresh.epoch = store.epoch
        return fresh

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
        """Changelog records for the buffered writes (one interval per partition that
        moved: ``streamlearn.streams.state.changelog.interval``)."""
        if not self.changelog_topic:
            return []
        out: list[ChangelogRecord] = []
        for p, store in self._stores.items():
            if p not in offsets and not store.changed():
                continue
            out.extend(
                interval(self.changelog_topic, store, offsets.get(p, {}), self._ids.get(p, {}))
            )
        return out

    def commit(self, offsets: Mapping[int, Mapping[str, int]]) -> None:
        """Commit every store with its partition's offsets."""
        for p, store in self._stores.items():
            store.commit(offsets.get(p, {}))


def _superseded(store: PartitionStore, tail: Tail) -> str | None:
    """Why ``store`` is not the newest state of its changelog (``tail``), or ``None``."""
    last = store.last_epoch()
    if tail.claimant is not None and tail.claimant != last:
        return f"epoch {tail.claimant} claimed it after this store's last commit (epoch {last})"
    if tail.claimant is None and tail.writer is not None and tail.writer != last:
        return f"epoch {tail.writer} wrote it after this store's last commit (epoch {last})"
    local = store.offsets()
    if tail.offsets and any(off > local.get(t, 0) for t, off in tail.offsets.items()):
        return f"the store is behind it (local {local}, changelog {tail.offsets})"
    return None
