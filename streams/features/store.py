"""The read side of the feature store: merging partials and the features served.

The feature processor (``streamlearn.streams.features.processor``) writes one record per
changed entity to the ``features`` topic. A user's record is complete; any other entity's
events are spread over all partitions, so each partition writes a *partial* of it and
every reader merges them (:func:`merge_partials`). Serving turns the stored values of a
user, a candidate item and the request's other entities into the raw features one model
row is scored on (:class:`ServedFeatures`), adding the features computed when they are
read; an online read of one entity (:func:`entity_features`) gives its public values. All
follow the project's catalog (``streamlearn.streams.catalog.features``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Final

import msgspec

from streamlearn.models.features import FeatureSpec
from streamlearn.streams.catalog.events import PARTITION_ENTITY
from streamlearn.streams.catalog.features import FeatureCatalog, SecondsSince
from streamlearn.streams.contracts import PredictionRequest, Scalar
from streamlearn.streams.features.aggregates import EntityLayout, layout

#: Prefix of raw accumulator names in stored values: not features.
RAW_PREFIX: Final = "_"
#: Most entities one bulk read may ask for.
MAX_READ_ENTITIES: Final = 1000


def is_partial(entity: str) -> bool:
    """Whether ``entity``'s records are per-partition partials (all but the user's)."""
    return entity != PARTITION_ENTITY


def merge_partials(
    entity: str, partials: Sequence[Mapping[str, Scalar]], catalog: FeatureCatalog
) -> dict[str, Scalar]:
    """One entity's values (features and raw accumulators) from its per-partition partials.

    Counts add up; decayed counts are decayed to the newest partial's time, then added,
    and the rates recomputed; windowed slices add; the last-event time is the newest; a
    context value comes from the newest partial that has one.
    """
    lay = layout(catalog, entity)
    return lay.values(lay.merge([lay.from_values(v) for v in partials]))


def public_values(values: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """``values`` without the raw accumulators (names starting with ``_``)."""
    return {k: v for k, v in values.items() if not k.startswith(RAW_PREFIX)}


def seconds_since(now: float, last: Scalar | None) -> float:
    """A ``SecondsSince`` feature at ``now``: seconds since ``last`` to the millisecond
    (half to even), -1.0 when ``last`` is missing or 0. ``numpy.rint((now - last) * 1000)
    / 1000`` gives the same float, so array code computes it alike."""
    return round((now - float(last)) * 1000) / 1000 if last else -1.0


class ServedFeatures:
    """What a model row holds: entity ids, surface, request context and served features.

    Built once per catalog: per entity, the served stored features with their defaults
    (for an entity not seen yet) and the features computed when read (``SecondsSince``,
    ``WindowedCount``). ``user`` and ``item`` come from the request and its candidate; any
    other entity's id from the request context's value of its key field
    (``context[key]``; :meth:`entity_ids`), its features at their defaults when the context
    has none. A row is built in this order, a later key replacing an earlier one:
    ``user_id``, ``item_id``, ``surface``, the request's context as ``ctx_<key>``, then
    per entity (``user``, ``item``, then the others, each after its key's value) its
    :attr:`defaults` (the stored values over them), its :attr:`since` features and its
    windowed counts.
    """

    def __init__(self, catalog: FeatureCatalog) -> None:
        served = catalog.served()
        stored = [f for f in served if not f.request_time]
        since = [(f, f.aggregation) for f in served if isinstance(f.aggregation, SecondsSince)]
        keys = catalog.schema.entity_keys
        #: Per entity: the stored features served, with their defaults.
        self.defaults: dict[str, dict[str, Scalar]] = {
            e: {f.name: f.default for f in stored if f.entity == e} for e in keys
        }
        #: Per entity: the request-time ``SecondsSince`` features as ``(name, source)``.
        self.since: dict[str, list[tuple[str, str]]] = {
            e: [(f.name, a.feature) for f, a in since if f.entity == e] for e in keys
        }
        names = {f.name for f in served}
        layouts = {e: layout(catalog, e) for e in catalog.entities}
        #: Per entity with served windowed counts: its layout (they are read from it).
        self.windowed: dict[str, EntityLayout] = {
            e: lay for e, lay in layouts.items() if any(f.name in names for f, _ in lay.windows)
        }
        #: Every entity's key field (its id in a row).
        self.keys: tuple[str, ...] = tuple(keys.values())
        #: The entities other than user and item, with their key fields.
        self.others: tuple[tuple[str, str], ...] = tuple(
            (e, k) for e, k in keys.items() if e not in ("user", "item")
        )
        #: A row is user, item and request parts only, with no windowed count: what
        #: serving's part-wise featurisation handles.
        self.simple = not self.others and not self.windowed

    def unknown_inputs(self, spec: FeatureSpec) -> list[str]:
        """The inputs of ``spec`` a row never holds (not a served feature, an entity key,
        ``surface`` or a ``ctx_<key>`` context value): a model reading them would score
        them as missing (a version trained before a feature was renamed or removed)."""
        known = {"surface", *self.keys}
        for entity in self.defaults:
            known.update(self.defaults[entity])
            known.update(name for name, _ in self.since[entity])
        for lay in self.windowed.values():
            known.update(f.name for f, _ in lay.windows)
        names = dict.fromkeys((*spec.categorical, *spec.numeric))
        return [n for n in names if n not in known and not n.startswith("ctx_")]

    def entity_ids(self, request: PredictionRequest) -> dict[str, str]:
        """The request's ids of the entities other than user and item (from its context)."""
        ctx = request.context or {}
        out: dict[str, str] = {}
        for entity, key in self.others:
            v = ctx.get(key)
            if v is not None and v != "":
                out[entity] = str(v)
        return out

    def row(
        self,
        request: PredictionRequest,
        item_id: str,
        user: Mapping[str, Scalar] | None,
        item: Mapping[str, Scalar] | None,
        now: float,
        others: Mapping[str, Mapping[str, Scalar] | None] | None = None,
    ) -> dict[str, Scalar]:
        """The raw feature dict scored for one candidate (and logged exactly as scored).

        ``others``: the stored values of the request's other entities, by entity (see
        :meth:`entity_ids`).
        """
        x: dict[str, Scalar] = {"user_id": request.user_id, "item_id": item_id}
        x["surface"] = request.surface
        ctx = request.context
        if ctx:
            for k, v in ctx.items():
                x[f"ctx_{k}"] = v
        self._add(x, "user", user, now)
        self._add(x, "item", item, now)
        for entity, key in self.others:
            if ctx and key in ctx:
                x[key] = ctx[key]
            self._add(x, entity, None if others is None else others.get(entity), now)
        return x

    def _add(
        self, x: dict[str, Scalar], entity: str, stored: Mapping[str, Scalar] | None, now: float
    ) -> None:
        defaults = self.defaults[entity]
        x.update(defaults)
        if stored:
            x.update((k, v) for k, v in stored.items() if k in defaults)
            for name, source in self.since[entity]:
                x[name] = seconds_since(now, stored.get(source))
            lay = self.windowed.get(entity)
            if lay is not None:
                x.update(lay.read_time_values(stored, now))
        else:
            for name, _ in self.since[entity]:
                x[name] = -1.0


@cache
def served_features(catalog: FeatureCatalog) -> ServedFeatures:
    """The (cached) :class:`ServedFeatures` of ``catalog``."""
    return ServedFeatures(catalog)


class EntityFeatures(msgspec.Struct, frozen=True):
    """One entity's current feature values, as an online read returns them."""

    entity: str
    id: str
    #: Every feature of the entity; request-time ones computed at the read.
    values: dict[str, Scalar]
    #: Event time (epoch seconds) of the newest event the values reflect.
    as_of: float


def entity_features(
    entity: str,
    entity_id: str,
    stored: Mapping[str, Scalar] | None,
    now: float,
    catalog: FeatureCatalog,
) -> EntityFeatures | None:
    """The public features of one entity from its stored values (``None`` when none are
    stored): raw accumulators left out, a feature missing from an older record at its
    default, features computed when read (seconds since, windowed counts) at ``now``."""
    if stored is None:
        return None
    lay = layout(catalog, entity)
    last = float(stored.get(lay.last_time_name, 0.0))
    windowed = lay.read_time_values(stored, now)
    values: dict[str, Scalar] = {}
    for f in catalog.of(entity):
        if isinstance(f.aggregation, SecondsSince):
            values[f.name] = seconds_since(now, stored.get(f.aggregation.feature))
        elif f.name in windowed:
            values[f.name] = windowed[f.name]
        else:
            values[f.name] = stored.get(f.name, f.default)
    return EntityFeatures(entity, entity_id, values, last)
