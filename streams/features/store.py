"""The read side of the feature store: merging item partials and the features served.

The feature processor (``streamlearn.streams.features.processor``) writes one record per changed
entity to the ``features`` topic. A user's record is complete; an item's events are spread over
all partitions, so each partition writes a *partial* of the item and every reader merges
them (:func:`merge_item_partials`). Serving turns the stored values of a user and a
candidate item into the raw features one model row is scored on
(:func:`serving_features`), adding the request-time features; an online read of one
entity (:func:`entity_features`) gives its public values. All follow the catalog
(``streamlearn.streams.catalog.features``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Final

import msgspec

from streamlearn.streams.catalog.features import (
    CATALOG,
    ENTITY_KEYS,
    FeatureCatalog,
    SecondsSince,
)
from streamlearn.streams.contracts import PredictionRequest, Scalar
from streamlearn.streams.features.aggregates import layout

#: Prefix of raw accumulator names in stored values: not features.
RAW_PREFIX: Final = "_"
#: Most entities one bulk read may ask for.
MAX_READ_ENTITIES: Final = 1000


def merge_item_partials(
    partials: Sequence[Mapping[str, Scalar]], catalog: FeatureCatalog = CATALOG
) -> dict[str, Scalar]:
    """One item's values (features and raw accumulators) from its per-partition partials.

    Counts add up; decayed counts are decayed to the newest partial's time, then added,
    and the rates recomputed; the last-event time is the newest; a context value comes
    from the newest partial that has one.
    """
    lay = layout(catalog, "item")
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
    """What a model row holds: ids, surface, request context and the served features.

    Built once per catalog: the served stored features with their defaults (for an
    entity not seen yet) and the request-time features. A row is built in this order,
    a later key replacing an earlier one: ``user_id``, ``item_id``, ``surface``, the
    request's context as ``ctx_<key>``, then per entity (``user``, then ``item``) its
    :attr:`defaults` (the stored values over them) and its :attr:`since` features.
    """

    def __init__(self, catalog: FeatureCatalog) -> None:
        served = catalog.served()
        stored = [f for f in served if not f.request_time]
        since = [(f, f.aggregation) for f in served if isinstance(f.aggregation, SecondsSince)]
        #: Per entity: the stored features served, with their defaults.
        self.defaults: dict[str, dict[str, Scalar]] = {
            e: {f.name: f.default for f in stored if f.entity == e} for e in ENTITY_KEYS
        }
        #: Per entity: the request-time ``SecondsSince`` features as ``(name, source)``.
        self.since: dict[str, list[tuple[str, str]]] = {
            e: [(f.name, a.feature) for f, a in since if f.entity == e] for e in ENTITY_KEYS
        }

    def row(
        self,
        request: PredictionRequest,
        item_id: str,
        user: Mapping[str, Scalar] | None,
        item: Mapping[str, Scalar] | None,
        now: float,
    ) -> dict[str, Scalar]:
        """The raw feature dict scored for one candidate (and logged exactly as scored)."""
        x: dict[str, Scalar] = {"user_id": request.user_id, "item_id": item_id}
        x["surface"] = request.surface
        if request.context:
            for k, v in request.context.items():
                x[f"ctx_{k}"] = v
        _add(x, self.defaults["user"], self.since["user"], user, now)
        _add(x, self.defaults["item"], self.since["item"], item, now)
        return x


def _add(
    x: dict[str, Scalar],
    defaults: Mapping[str, Scalar],
    since: Sequence[tuple[str, str]],
    stored: Mapping[str, Scalar] | None,
    now: float,
) -> None:
    x.update(defaults)
    if stored:
        x.update((k, v) for k, v in stored.items() if k in defaults)
        for name, source in since:
            x[name] = seconds_since(now, stored.get(source))
    else:
        for name, _ in since:
            x[name] = -1.0


@cache
def served_features(catalog: FeatureCatalog = CATALOG) -> ServedFeatures:
    """The (cached) :class:`ServedFeatures` of ``catalog``."""
    return ServedFeatures(catalog)


def serving_features(
    request: PredictionRequest,
    item_id: str,
    user: Mapping[str, Scalar] | None,
    item: Mapping[str, Scalar] | None,
    now: float,
    catalog: FeatureCatalog = CATALOG,
) -> dict[str, Scalar]:
    """The raw feature dict scored for one candidate (and logged exactly as scored)."""
    return served_features(catalog).row(request, item_id, user, item, now)


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
    catalog: FeatureCatalog = CATALOG,
) -> EntityFeatures | None:
    """The public features of one entity from its stored values (``None`` when none are
    stored): raw accumulators left out, a feature missing from an older record at its
    default, request-time features computed at ``now``."""
    if stored is None:
        return None
    last = float(stored.get(layout(catalog, entity).last_time_name, 0.0))
    values: dict[str, Scalar] = {}
    for f in catalog.of(entity):
        if isinstance(f.aggregation, SecondsSince):
            values[f.name] = seconds_since(now, stored.get(f.aggregation.feature))
        else:
            values[f.name] = stored.get(f.name, f.default)
    return EntityFeatures(entity, entity_id, values, last)
