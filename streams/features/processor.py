"""The feature processor: the write side of the feature store.

It computes the features declared in ``streamlearn.streams.catalog.features``, through the
per-entity accumulators that ``streamlearn.streams.features.aggregates`` compiles from them. It
keeps per-user and per-item aggregates in partitioned RocksDB stores, consuming ``activity``
(key = user_id) once. A user lives in one partition; an item's events are spread over
all partitions, so each partition keeps a *partial* item aggregate (additive counts and
decayed sums) and readers merge the partials (``streamlearn.streams.features.store``) — the
pre-aggregate-then-merge pattern, which avoids re-keying every event through a
repartition topic (that doubled the work per event). Every changed entity is emitted once
per batch to the ``features`` topic (same partition as its store), which is both the
stores' changelog and what serving replicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from streamlearn.streams.catalog.features import CATALOG, FeatureCatalog
from streamlearn.streams.contracts import ActivityEvent, FeatureRecord, decode_event
from streamlearn.streams.features.aggregates import Aggregate, EntityLayout, layout
from streamlearn.streams.kafka.clients import Cluster
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.runtime.processor import (
    Decoder,
    Output,
    Record,
    StatefulProcessor,
    TopicPartitionKey,
)
from streamlearn.streams.state.store import Durability

_RECORD_DECODER = msgspec.json.Decoder(FeatureRecord)


class FeatureProcessor(StatefulProcessor):
    """Per-user and per-item aggregates; the store's changelog is the features topic.

    Aggregates are cached (bounded per partition) so a hot entity is not read and decoded
    from RocksDB on every batch. A batch updates the cached objects in place and records
    which it touched; ``discard`` evicts those, so they are read back from RocksDB, which
    only ever holds committed state.
    """

    name = "features"

    def __init__(
        self,
        topics: Topics,
        state_dir: Path,
        cluster: Cluster | None = None,
        cache_size: int = 200_000,
        catalog: FeatureCatalog = CATALOG,
        durability: Durability = Durability.SYNC,
    ) -> None:
        super().__init__(state_dir, topics.features, cluster, durability)
        self.topics = topics
        self.catalog = catalog
        self._user = layout(catalog, "user")
        self._item = layout(catalog, "item")
        self._cache_size = cache_size
        self._cache: dict[int, dict[str, Aggregate]] = {}
        self._dirty: dict[int, dict[str, Aggregate]] = {}

    def inputs(self) -> Mapping[str, Decoder]:
        return {self.topics.activity: decode_event}

    def process(self, records: list[Record]) -> list[Output]:
        touch = self._touch
        update_user, update_item = self._user.update, self._item.update
        for r in records:
            ev: ActivityEvent = r.value
            p = r.partition
            update_user(touch(p, "user/" + ev.user_id), ev)
            update_item(touch(p, "item/" + ev.item_id), ev)
        return []

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        # Encoded once per entity per commit, however often the interval touched it.
        user, item = self._user.encode, self._item.encode
        for p, dirty in self._dirty.items():
            put = self.state[p].put
            for key, agg in dirty.items():
                put(key, (user if key[0] == "u" else item)(key[5:], agg))
        return super().prepare(offsets)

    def _touch(self, partition: int, key: str) -> Aggregate:
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = {}
        agg = dirty.get(key)
        if agg is None:
            cache = self._cache.get(partition)
            if cache is None:
                cache = self._cache[partition] = {}
            agg = cache.get(key)
            if agg is None:
                raw = self.state[partition].get(key)
                lay = self._user if key[0] == "u" else self._item
                agg = cache[key] = lay.new() if raw is None else _aggregate(lay, raw)
            dirty[key] = agg
        return agg

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        super().commit(offsets)
        self._dirty = {}
        for cache in self._cache.values():
            if len(cache) > self._cache_size:
                cache.clear()  # bounded memory; RocksDB holds everything committed

    def discard(self) -> None:
        super().discard()
        for p, dirty in self._dirty.items():
            cache = self._cache.get(p, {})
            for key in dirty:
                cache.pop(key, None)
        self._dirty = {}

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for _, p in partitions:
            self._cache.pop(p, None)
            self._dirty.pop(p, None)
        super().revoke(partitions)


def _aggregate(lay: EntityLayout, raw: bytes) -> Aggregate:
    rec = _RECORD_DECODER.decode(raw)
    return lay.from_values(rec.values, rec.ts)
