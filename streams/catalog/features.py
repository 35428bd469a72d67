"""The feature catalog: every feature declared once, and everything else built from it.

A :class:`Feature` has a name, an entity (``user`` or ``item``), an aggregation (how its
value comes from the ``activity`` stream; the aggregation fixes its type), a description,
an owner and a version. :data:`CATALOG` holds the declared features; from it are built

* the feature processor's per-entity accumulators (``streamlearn.streams.features.aggregates``);
* the merge of an item's per-partition partials and the raw features serving scores
  (``streamlearn.streams.features.store``), so what is served and logged for training follows it;
* the ``feed`` model's feature spec (:func:`feed_spec`);
* ``streamlearn features list``, serving's ``GET /v1/features`` and the README's table
  (:meth:`FeatureCatalog.markdown`; a test keeps the README in step).

To add a feature, add one :class:`Feature` to :data:`FEATURES`. Bump ``version`` when a
feature's computation changes, so readers of stored values and of trained models can
tell the two apart.

Aggregations:

============================  =========  ==================================================
aggregation                   type       value
============================  =========  ==================================================
``Count(types)``              int        events of ``types``, all time
``DecayedRate(num, den, …)``  float      ``(num' + prior·strength) / (den' + strength)``,
                                         ``num'``/``den'`` counts decayed with a half-life
``LastEventTime()``           float      event time (epoch s) of the entity's latest event
``LatestContext(key)``        str        latest string ``context[key]`` of its events
``SecondsSince(feature)``     float      at request time: seconds since a
                                         ``LastEventTime`` feature (-1 when unknown)
============================  =========  ==================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final, Literal

from streamlearn.models.features import FeatureSpec
from streamlearn.streams.contracts import ENGAGEMENT_TYPES, EVENT_TYPES, Scalar
from streamlearn.streams.errors import CatalogError

Entity = Literal["user", "item"]
ValueType = Literal["int", "float", "str"]

#: The entities, with the field that identifies one in events, requests and entity files.
ENTITY_KEYS: Final[dict[str, str]] = {"user": "user_id", "item": "item_id"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Count:
    """Events of ``types`` on the entity, all time. Partials add up."""

    types: frozenset[str]

    type: ValueType = field(default="int", init=False)
    default: Scalar = field(default=0, init=False)


@dataclass(frozen=True)
class DecayedRate:
    """A smoothed rate of exponentially decayed counts (e.g. a click-through rate).

    ``(n + prior * strength) / (d + strength)`` where ``n`` and ``d`` count the events of
    ``numerator`` and ``denominator`` types, each decayed by half every ``half_life_s``
    seconds of event time (a Beta prior of mean ``prior`` worth ``strength`` events); a
    late event counts as decayed from its own time, so arrival order does not matter.
    Both counts ride along in the feature record as raw accumulators, so partials merge
    (decay to the newest time, then add) and a store restores from its changelog.
    """

    numerator: frozenset[str]
    denominator: frozenset[str]
    half_life_s: float = 600.0
    prior: float = 0.05
    strength: float = 10.0

    type: ValueType = field(default="float", init=False)

    @property
    def default(self) -> Scalar:
        """The prior mean: the value of an entity without events."""
        return self.prior


@dataclass(frozen=True)
class LastEventTime:
    """Event time (epoch seconds) of the entity's latest event; partials take the max."""

    type: ValueType = field(default="float", init=False)
    default: Scalar = field(default=0.0, init=False)


@dataclass(frozen=True)
class LatestContext:
    """The string ``context[key]`` of the entity's newest event (by event time) that has
    one ("" before one)."""

    key: str

    type: ValueType = field(default="str", init=False)
    default: Scalar = field(default="", init=False)


@dataclass(frozen=True)
class SecondsSince:
    """Computed at request time: seconds from ``feature`` (a ``LastEventTime`` of the same
    entity) to the request, rounded to ms; -1 when the entity has no events."""

    feature: str

    type: ValueType = field(default="float", init=False)
    default: Scalar = field(default=-1.0, init=False)


Aggregation = Count | DecayedRate | LastEventTime | LatestContext | SecondsSince


@dataclass(frozen=True)
class Feature:
    """One declared feature."""

    name: str
    entity: Entity
    aggregation: Aggregation
    description: str
    owner: str
    version: int = 1
    #: Fed to models: part of the raw features serving scores and logs for training.
    #: A feature kept only to derive others (e.g. a last-event time) says ``False``.
    served: bool = True

    @property
    def type(self) -> ValueType:
        """``int``, ``float`` or ``str``, fixed by the aggregation."""
        return self.aggregation.type

    @property
    def default(self) -> Scalar:
        """The value served for an entity that has no events yet."""
        return self.aggregation.default

    @property
    def request_time(self) -> bool:
        """Computed when a request is scored, not stored."""
        return isinstance(self.aggregation, SecondsSince)

    def note(self, emphasis: str = "") -> str:
        """`` (at request time)`` / `` (not a model input)`` where that applies, else ""."""
        notes = [
            *(["at request time"] if self.request_time else []),
            *([] if self.served else ["not a model input"]),
        ]
        return f" {emphasis}({', '.join(notes)}){emphasis}" if notes else ""

    def info(self) -> dict[str, str | int]:
        """The public definition: name, entity, type, description, owner, version."""
        return {
            "name": self.name,
            "entity": self.entity,
            "type": self.type,
            "description": self.description,
            "owner": self.owner,
            "version": self.version,
        }


@dataclass(frozen=True)
class FeatureCatalog:
    """A checked set of declared features; hashable, so views built from it can be cached."""

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        _check(self.features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def get(self, name: str) -> Feature:
        """The feature called ``name``; :class:`KeyError` naming the known ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"expected a feature among {sorted(self._by_name)}, got {name!r}"
            ) from None

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def of(self, entity: str) -> tuple[Feature, ...]:
        """The features of ``entity``, in declared order."""
        return tuple(f for f in self.features if f.entity == entity)

    def stored(self, entity: str) -> tuple[Feature, ...]:
        """The features of ``entity`` the processor keeps (all but request-time ones)."""
        return tuple(f for f in self.of(entity) if not f.request_time)

    def served(self) -> tuple[Feature, ...]:
        """The features fed to models, in declared order."""
        return tuple(f for f in self.features if f.served)

    def with_features(self, *features: Feature) -> FeatureCatalog:
        """This catalog plus ``features`` (checked like any catalog)."""
        return FeatureCatalog(self.features + features)

    def info(self) -> list[dict[str, str | int]]:
        """Every feature's public definition, in declared order."""
        return [f.info() for f in self.features]

    def markdown(self) -> str:
        """The features as a Markdown table (the README's, and ``features list --markdown``)."""
        lines = [
            "| name | entity | type | description | owner | version |",
            "|---|---|---|---|---|---:|",
        ]
        for f in self.features:
            lines.append(
                f"| `{f.name}` | {f.entity} | {f.type} | {f.description}{f.note('*')} "
                f"| {f.owner} | {f.version} |"
            )
        return "\n".join(lines) + "\n"


def _check(features: Sequence[Feature]) -> None:
    seen: set[str] = set()
    for f in features:
        where = f"feature {f.name!r}"
        if not _NAME.match(f.name) or not f.name.startswith(f.entity + "_"):
            raise CatalogError(
                f"{where}: expected a lower_snake_case name starting with {f.entity + '_'!r} "
                "(user and item features share one flat dict when served)"
            )
        if f.entity not in ENTITY_KEYS:
            raise CatalogError(
                f"{where}: expected entity in {sorted(ENTITY_KEYS)}, got {f.entity!r}"
            )
        if f.name in seen:
            raise CatalogError(f"{where}: declared twice")
        seen.add(f.name)
        if not f.description or not f.owner or f.version < 1:
            raise CatalogError(f"{where}: expected a description, an owner and a version >= 1")
        agg = f.aggregation
        types: frozenset[str] = frozenset()
        if isinstance(agg, Count):
            types = agg.types
        elif isinstance(agg, DecayedRate):
            types = agg.numerator | agg.denominator
            if agg.half_life_s <= 0 or agg.strength <= 0:
                raise CatalogError(f"{where}: expected half_life_s > 0 and strength > 0")
        unknown = sorted(types - EVENT_TYPES)
        if unknown or (isinstance(agg, (Count, DecayedRate)) and not types):
            raise CatalogError(
                f"{where}: expected event types among {sorted(EVENT_TYPES)}, got {sorted(types)}"
            )
    by_name = {f.name: f for f in features}
    for entity in ENTITY_KEYS:
        last = [
            f for f in features if f.entity == entity and isinstance(f.aggregation, LastEventTime)
        ]
        if len(last) > 1:
            raise CatalogError(f"expected at most one LastEventTime feature per entity, got {last}")
    for f in features:
        if isinstance(f.aggregation, SecondsSince):
            src = by_name.get(f.aggregation.feature)
            if (
                src is None
                or src.entity != f.entity
                or not isinstance(src.aggregation, LastEventTime)
            ):
                raise CatalogError(
                    f"feature {f.name!r}: expected SecondsSince of a LastEventTime feature of "
                    f"entity {f.entity!r}, got {f.aggregation.feature!r}"
                )


_OWNER: Final = "ranking"
_IMPRESSION: Final = frozenset({"impression"})

#: Every feature streamlearn computes. Add a feature here and it is processed, stored,
#: replicated, served, logged for training, listed and documented.
FEATURES: Final[tuple[Feature, ...]] = (
    Feature(
        "user_impressions",
        "user",
        Count(_IMPRESSION),
        "Impressions shown to the user, all time.",
        _OWNER,
    ),
    Feature(
        "user_engagements",
        "user",
        Count(ENGAGEMENT_TYPES),
        "Clicks, likes, shares, conversions by the user.",
        _OWNER,
    ),
    Feature("user_hides", "user", Count(frozenset({"hide"})), "Items the user hid.", _OWNER),
    Feature(
        "user_ctr",
        "user",
        DecayedRate(ENGAGEMENT_TYPES, _IMPRESSION),
        "Engagements per impression, exponentially decayed (half-life 10 min), smoothed.",
        _OWNER,
    ),
    Feature(
        "user_last_event_ts",
        "user",
        LastEventTime(),
        "Event time of the user's latest event.",
        _OWNER,
        served=False,
    ),
    Feature(
        "user_recency_s",
        "user",
        SecondsSince("user_last_event_ts"),
        "Seconds since the user's previous event.",
        _OWNER,
    ),
    Feature(
        "item_impressions",
        "item",
        Count(_IMPRESSION),
        "Times the item was shown, all time.",
        _OWNER,
    ),
    Feature(
        "item_engagements", "item", Count(ENGAGEMENT_TYPES), "Engagements with the item.", _OWNER
    ),
    Feature(
        "item_ctr",
        "item",
        DecayedRate(ENGAGEMENT_TYPES, _IMPRESSION),
        "Engagements per impression of the item, decayed (half-life 10 min), smoothed.",
        _OWNER,
    ),
    Feature(
        "item_category",
        "item",
        LatestContext("category"),
        "Category, from the event context `category`.",
        _OWNER,
    ),
    Feature(
        "item_last_event_ts",
        "item",
        LastEventTime(),
        "Event time of the item's latest event.",
        _OWNER,
        served=False,
    ),
    Feature(
        "item_recency_s",
        "item",
        SecondsSince("item_last_event_ts"),
        "Seconds since the item's previous event.",
        _OWNER,
    ),
)

#: The catalog every component uses unless handed another one (tests extend it).
CATALOG: Final = FeatureCatalog(FEATURES)

#: Crosses of the ``feed`` model (kept where both fields are in the spec).
FEED_CROSSES: Final[tuple[tuple[str, ...], ...]] = (("user_id", "item_category"),)


def feed_spec(hash_bits: int = 18, catalog: FeatureCatalog = CATALOG) -> FeatureSpec:
    """The ``feed`` model's feature spec, from the catalog's served features.

    Categorical: ``user_id``, ``item_id``, ``surface`` and every served ``str`` feature;
    numeric: every served ``int``/``float`` feature; crosses: :data:`FEED_CROSSES`.
    """
    served = catalog.served()
    categorical = (*ENTITY_KEYS.values(), "surface", *(f.name for f in served if f.type == "str"))
    crosses = tuple(c for c in FEED_CROSSES if all(name in categorical for name in c))
    return FeatureSpec(
        categorical=categorical,
        numeric=tuple(f.name for f in served if f.type != "str"),
        crosses=crosses,
        hash_bits=hash_bits,
    )
