"""Feature declarations: what a project computes per entity, and everything built from it.

A :class:`Feature` has a name, an entity (``user``, ``item`` or one the project declares),
an aggregation (how its value comes from the ``activity`` stream; the aggregation fixes
its type), a description, an owner and a version. A :class:`FeatureCatalog` holds a
project's features, checked against its event declarations
(:class:`~streamlearn.streams.catalog.events.EventSchema`); from it are built

* the feature processor's per-entity accumulators (``streamlearn.streams.features.aggregates``);
* the merge of an entity's per-partition partials and the raw features serving scores
  (``streamlearn.streams.features.store``), so what is served and logged for training
  follows it;
* the models' feature specs (``streamlearn.project``);
* ``streamlearn features list``, serving's ``GET /v1/features`` and the docs' tables
  (:meth:`FeatureCatalog.markdown`).

Bump ``version`` when a feature's computation changes, so readers of stored values and of
trained models can tell the two apart.

Aggregations:

==================================  =====  ==================================================
aggregation                         type   value
==================================  =====  ==================================================
``Count(types)``                    int    events of ``types``, all time
``WindowedCount(types, window_s)``  int    events of ``types`` in the last ``window_s``
                                           seconds (at the time it is read), counted in
                                           ``buckets`` slices of the window
``DecayedRate(num, den, …)``        float  ``(num' + prior·strength) / (den' + strength)``,
                                           ``num'``/``den'`` counts decayed with a half-life
``LastEventTime()``                 float  event time (epoch s) of the entity's latest event
``LatestContext(key)``              str    latest string ``context[key]`` of its events
``SecondsSince(feature)``           float  at request time: seconds since a
                                           ``LastEventTime`` feature (-1 when unknown)
==================================  =====  ==================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.contracts import Scalar
from streamlearn.streams.errors import CatalogError

ValueType = Literal["int", "float", "str"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _types(value: Iterable[str] | str) -> frozenset[str]:
    """Event types given as a list (a lone string is one type, not its letters)."""
    return frozenset((value,) if isinstance(value, str) else value)


@dataclass(frozen=True, init=False)
class Count:
    """Events of ``types`` on the entity, all time. Partials add up."""

    types: frozenset[str]

    type: ValueType = field(default="int", init=False)
    default: Scalar = field(default=0, init=False)

    def __init__(self, types: Iterable[str]) -> None:
        object.__setattr__(self, "types", _types(types))


@dataclass(frozen=True, init=False)
class WindowedCount:
    """Events of ``types`` on the entity in the last ``window_s`` seconds, as of the time
    the value is read (a request, or a training row's time).

    Counted in ``buckets`` slices of the window by event time: an event counts for
    between ``window_s - window_s / buckets`` and ``window_s`` seconds. An event older
    than the entity's newest by a window or more is not counted. Partials add per slice.
    """

    types: frozenset[str]
    window_s: float
    buckets: int = 12

    type: ValueType = field(default="int", init=False)
    default: Scalar = field(default=0, init=False)

    def __init__(self, types: Iterable[str], window_s: float, buckets: int = 12) -> None:
        object.__setattr__(self, "types", _types(types))
        object.__setattr__(self, "window_s", float(window_s))
        object.__setattr__(self, "buckets", int(buckets))

    @property
    def width(self) -> float:
        """Seconds of event time per slice."""
        return self.window_s / self.buckets


@dataclass(frozen=True, init=False)
class DecayedRate:
    """A smoothed rate of exponentially decayed counts (e.g. engagements per impression).

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

    def __init__(
        self,
        numerator: Iterable[str],
        denominator: Iterable[str],
        half_life_s: float = 600.0,
        prior: float = 0.05,
        strength: float = 10.0,
    ) -> None:
        object.__setattr__(self, "numerator", _types(numerator))
        object.__setattr__(self, "denominator", _types(denominator))
        object.__setattr__(self, "half_life_s", float(half_life_s))
        object.__setattr__(self, "prior", float(prior))
        object.__setattr__(self, "strength", float(strength))

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


Aggregation = Count | WindowedCount | DecayedRate | LastEventTime | LatestContext | SecondsSince


@dataclass(frozen=True)
class Feature:
    """One declared feature.

    Parameters
    ----------
    name
        ``<entity>_…`` in lower_snake_case (the features of a row share one flat dict).
    entity
        ``user``, ``item`` or an entity the project declares.
    aggregation
        How its value comes from the events (see the module docstring).
    description, owner, version
        Documentation: what it is, who answers for it, and its version (bump it when
        its computation changes).
    served
        Fed to models; a feature kept only to derive others says ``False``.
    """

    name: str
    entity: str
    aggregation: Aggregation
    description: str = ""
    owner: str = ""
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
    """A project's features, checked against its events; hashable, so views built from it
    can be cached."""

    features: tuple[Feature, ...]
    schema: EventSchema

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        _check(self.features, self.schema)

    @property
    def entities(self) -> tuple[str, ...]:
        """The entities that have features, in declared entity order."""
        have = {f.entity for f in self.features}
        return tuple(e for e in self.schema.entity_keys if e in have)

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
        return FeatureCatalog(self.features + features, self.schema)

    def info(self) -> list[dict[str, str | int]]:
        """Every feature's public definition, in declared order."""
        return [f.info() for f in self.features]

    def markdown(self) -> str:
        """The features as a Markdown table (``features list --markdown``, and the docs' page
        of the built-in example)."""
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


def _check(features: Sequence[Feature], schema: EventSchema) -> None:
    seen: set[str] = set()
    entity_keys = schema.entity_keys
    for f in features:
        where = f"feature {f.name!r}"
        if not isinstance(f, Feature):
            raise CatalogError(f"features: expected Feature(...) declarations, got {f!r}")
        if f.entity not in entity_keys:
            raise CatalogError(
                f"{where}: expected entity among {sorted(entity_keys)}, got {f.entity!r}"
            )
        if not _NAME.match(f.name) or not f.name.startswith(f.entity + "_"):
            raise CatalogError(
                f"{where}: expected a lower_snake_case name starting with {f.entity + '_'!r} "
                "(the features of a row share one flat dict when served)"
            )
        if f.name in seen:
            raise CatalogError(f"{where}: declared twice")
        seen.add(f.name)
        if f.version < 1:
            raise CatalogError(f"{where}: expected a version >= 1, got {f.version}")
        agg = f.aggregation
        types: frozenset[str] = frozenset()
        if isinstance(agg, Count | WindowedCount):
            types = agg.types
        elif isinstance(agg, DecayedRate):
            types = agg.numerator | agg.denominator
            if agg.half_life_s <= 0 or agg.strength <= 0:
                raise CatalogError(f"{where}: expected half_life_s > 0 and strength > 0")
        if isinstance(agg, WindowedCount) and (agg.window_s <= 0 or not 1 <= agg.buckets <= 64):
            raise CatalogError(
                f"{where}: expected window_s > 0 and 1 <= buckets <= 64, "
                f"got window_s={agg.window_s}, buckets={agg.buckets}"
            )
        unknown = sorted(types - schema.types)
        if unknown or (isinstance(agg, Count | WindowedCount | DecayedRate) and not types):
            raise CatalogError(
                f"{where}: expected event types among {sorted(schema.types)}, got {sorted(types)}"
            )
    by_name = {f.name: f for f in features}
    for entity in entity_keys:
        last = [
            f.name
            for f in features
            if f.entity == entity and isinstance(f.aggregation, LastEventTime)
        ]
        if len(last) > 1:
            raise CatalogError(
                f"entity {entity!r}: expected at most one LastEventTime feature, got {last}"
            )
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
