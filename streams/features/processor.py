"""The feature processor: the write side of the feature store.

It computes a project's features (a :class:`~streamlearn.streams.catalog.features.FeatureCatalog`)
through the per-entity accumulators that ``streamlearn.streams.features.aggregates`` compiles from
them. It keeps one aggregate per entity (user, item, and any entity the project declares, keyed by
an event field) in partitioned RocksDB stores, consuming ``activity`` (key = user_id) once. A user
lives in one partition; any other entity's events are spread over all partitions, so each partition
keeps a *partial* aggregate (additive counts, decayed sums, windowed slices) and readers merge the
partials (``streamlearn.streams.features.store``) — the pre-aggregate-then-merge pattern, which
avoids re-keying every event through a repartition topic (that doubled the work per event). An event
without a value for an entity's key field leaves that entity alone. Every changed entity is emitted
once per batch to the ``features`` topic (same partition as its store), which is both the stores'
changelog and what serving replicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from streamlearn.streams.catalog.events import PARTITION_ENTITY
from streamlearn.streams.catalog.features import FeatureCatalog
from streamlearn.streams.contracts import ActivityEvent, FeatureRecord
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
    """Per-entity aggregates; the store's changelog is the features topic.

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
        catalog: FeatureCatalog,
        cluster: Cluster | None = None,
        cache_size: int = 200_000,
        durability: Durability = Durability.SYNC,
    ) -> None:
        super().__init__(state_dir, topics.features, cluster, durability)
        self.topics = topics
        self.catalog = catalog
        self._layouts = {e: layout(catalog, e) for e in catalog.entities}
        keys = catalog.schema.entity_keys
        #: (key prefix, event field, update) per entity with features; the user's first
        self._entities = [
            (e + "/", keys[e], lay.update)
            for e, lay in sorted(self._layouts.items(), key=lambda kv: kv[0] != PARTITION_ENTITY)
        ]
        self._cache_size = cache_size
        self._cache: dict[int, dict[str, Aggregate]] = {}
        self._dirty: dict[int, dict[str, Aggregate]] = {}

    def inputs(self) -> Mapping[str, Decoder]:
        return {self.topics.activity: self.catalog.schema.decode}

    def process(self, records: list[Record]) -> list[Output]:
        touch = self._touch
        entities = self._entities
        for r in records:
            ev: ActivityEvent = r.value
            p = r.partition
            for prefix, field, update in entities:
                entity_id = getattr(ev, field)
                if entity_id:
                    update(touch(p, prefix + entity_id), ev)
        return []

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        # Encoded once per entity per commit, however often the interval touched it.
        layouts = self._layouts
        for p, dirty in self._dirty.items():
            put = self.state[p].put
            for key, agg in dirty.items():
                entity, _, entity_id = key.partition("/")
                put(key, layouts[entity].encode(entity_id, agg))
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
                lay = self._layouts[key.partition("/")[0]]
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
