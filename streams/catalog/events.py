"""The events a project declares, and the contract of its activity events built from them.

A project names its event types by role (:class:`Events`): *impressions* (an item was
shown: what the joiner turns into training examples), *engagements* (what a label head
may count as a positive), *negatives* (explicit negative feedback, such as hiding an
item: features count them, a head never takes one as a positive) and *others* that only
features count. It names the surfaces items are shown on, the entities features are
kept for (:class:`Entity`: ``user`` and ``item`` always, keyed by ``user_id`` and
``item_id``; any other keyed by an event field) and extra typed event fields
(:class:`Field`).

:class:`EventSchema` compiles those into one msgspec struct (a subclass of
:class:`~streamlearn.streams.contracts.ActivityEvent` whose ``type`` and ``surface`` are
``Literal`` types of the declared values, with the declared fields added), so decoding
and validating an event stays one pass of msgspec in C, and an undeclared type or
surface is refused with a message listing the declared ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from streamlearn.streams.contracts import (
    MAX_EVENT_BYTES,
    ActivityEvent,
    ContractError,
    check_event,
    decode,
)
from streamlearn.streams.errors import CatalogError

#: Names of event types, surfaces, entities and fields.
NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: The entities every project has, with the event field that identifies one.
BUILTIN_ENTITIES: Final[dict[str, str]] = {"user": "user_id", "item": "item_id"}
#: The entity whose records are whole in one partition (``activity`` is keyed by it);
#: every other entity's records are per-partition partials that readers merge.
PARTITION_ENTITY: Final = "user"
#: Event fields every activity event has (a declared field may not reuse one).
_BASE_FIELDS: Final = frozenset(f.name for f in msgspec.structs.fields(ActivityEvent))
_TYPES: Final[dict[str, type]] = {"str": str, "int": int, "float": float, "bool": bool}
FieldType = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class Events:
    """Event types by role. Every type has exactly one role.

    Parameters
    ----------
    impressions
        An item was shown to a user (what becomes a training example).
    engagements
        A user acted on a shown item (what a label head may count as a positive).
    negatives
        Explicit negative feedback on a shown item (never a positive).
    others
        Types only features count.
    """

    impressions: Sequence[str]
    engagements: Sequence[str]
    negatives: Sequence[str] = ()
    others: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("impressions", "engagements", "negatives", "others"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise CatalogError(f"events.{name}: expected a list of event types, got {value!r}")
            object.__setattr__(self, name, tuple(value))

    @property
    def roles(self) -> dict[str, str]:
        """Event type → its role (``impressions``, ``engagements``, ``negatives``,
        ``others``)."""
        out: dict[str, str] = {}
        for role, types in (
            ("impressions", self.impressions),
            ("engagements", self.engagements),
            ("negatives", self.negatives),
            ("others", self.others),
        ):
            for t in types:
                if not NAME.match(t):
                    raise CatalogError(
                        f"event type {t!r}: expected a lower_snake_case name ({NAME.pattern})"
                    )
                if t in out:
                    raise CatalogError(
                        f"event type {t!r}: declared in both {out[t]} and {role}; a type has "
                        "one role"
                    )
                out[t] = role
        if not self.impressions:
            raise CatalogError("events: expected at least one impression type, got none")
        return out


@dataclass(frozen=True)
class Field:
    """An extra typed field of activity events (top level of the event's JSON).

    Parameters
    ----------
    name
        The field's name in the event (lower_snake_case).
    type
        ``"str"``, ``"int"``, ``"float"`` or ``"bool"`` (or the Python type).
    description
        What it holds (in the contract's JSON Schema).
    required
        Events without it are refused (dead-lettered); by default it may be absent.
    """

    name: str
    type: FieldType | type = "str"
    description: str = ""
    required: bool = False

    def __post_init__(self) -> None:
        t = self.type.__name__ if isinstance(self.type, type) else self.type
        if t not in _TYPES:
            raise CatalogError(
                f"field {self.name!r}: expected type among {sorted(_TYPES)}, got {self.type!r}"
            )
        object.__setattr__(self, "type", t)
        if not NAME.match(self.name):
            raise CatalogError(f"field {self.name!r}: expected a lower_snake_case name")
        if self.name in _BASE_FIELDS:
            raise CatalogError(
                f"field {self.name!r}: every event already has it ({sorted(_BASE_FIELDS)})"
            )

    @property
    def python_type(self) -> Any:
        """The Python type of its values."""
        return _TYPES[str(self.type)]


@dataclass(frozen=True)
class Entity:
    """Something features are kept for, identified in events by one field.

    Parameters
    ----------
    name
        The entity's name (features of it are named ``<name>_…``).
    key
        The event field whose value identifies one: ``user_id``, ``item_id``, or a
        declared string :class:`Field`. At request time the id comes from the request's
        ``context[key]`` (``user_id`` and the candidate ``item_id`` from the request).
    description
        What it is.
    """

    name: str
    key: str
    description: str = ""


def _literal(values: Iterable[str]) -> Any:
    return Literal[tuple(values)]


@dataclass(frozen=True)
class EventSchema:
    """The checked event declarations of a project, and the struct its events decode to."""

    events: Events
    surfaces: tuple[str, ...]
    entities: tuple[Entity, ...] = ()
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "surfaces", tuple(self.surfaces))
        object.__setattr__(self, "fields", tuple(self.fields))
        given = tuple(self.entities)
        builtin = tuple(Entity(n, k) for n, k in BUILTIN_ENTITIES.items())
        extra = tuple(e for e in given if e.name not in BUILTIN_ENTITIES)
        for e in given:
            if e.name in BUILTIN_ENTITIES and e.key != BUILTIN_ENTITIES[e.name]:
                raise CatalogError(
                    f"entity {e.name!r}: built in, keyed by {BUILTIN_ENTITIES[e.name]!r}; "
                    f"got key {e.key!r}"
                )
        object.__setattr__(self, "entities", builtin + extra)
        self._check()

    def _check(self) -> None:
        self.events.roles  # noqa: B018 (validates the roles)
        if not self.surfaces:
            raise CatalogError("surfaces: expected at least one surface, got none")
        seen: set[str] = set()
        for s in self.surfaces:
            if not NAME.match(s):
                raise CatalogError(f"surface {s!r}: expected a lower_snake_case name")
            if s in seen:
                raise CatalogError(f"surface {s!r}: declared twice")
            seen.add(s)
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CatalogError(f"field {dup[0]!r}: declared twice")
        string_fields = {f.name for f in self.fields if f.type == "str"}
        entity_names: set[str] = set()
        for e in self.entities:
            if not NAME.match(e.name):
                raise CatalogError(f"entity {e.name!r}: expected a lower_snake_case name")
            if e.name in entity_names:
                raise CatalogError(f"entity {e.name!r}: declared twice")
            entity_names.add(e.name)
            if e.name not in BUILTIN_ENTITIES and e.key not in string_fields:
                raise CatalogError(
                    f"entity {e.name!r}: expected its key to be a declared string field "
                    f"(declared: {sorted(string_fields)}), got {e.key!r}"
                )

    # -- what the platform reads --------------------------------------------------------

    @cached_property
    def roles(self) -> dict[str, str]:
        """Event type → role."""
        return self.events.roles

    @cached_property
    def types(self) -> frozenset[str]:
        """Every declared event type."""
        return frozenset(self.roles)

    @cached_property
    def impressions(self) -> frozenset[str]:
        """The impression types."""
        return frozenset(self.events.impressions)

    @cached_property
    def engagements(self) -> frozenset[str]:
        """The engagement types."""
        return frozenset(self.events.engagements)

    @cached_property
    def negatives(self) -> frozenset[str]:
        """The negative types."""
        return frozenset(self.events.negatives)

    @cached_property
    def entity_keys(self) -> dict[str, str]:
        """Entity name → the event field that identifies one (user and item first)."""
        return {e.name: e.key for e in self.entities}

    @cached_property
    def event_type(self) -> type[ActivityEvent]:
        """The msgspec struct events of this schema decode to."""
        extra: list[tuple[str, Any, Any]] = [
            (
                "type",
                Annotated[_literal(self.roles), Meta(description="What the user did.")],
                msgspec.NODEFAULT,
            ),
            (
                "surface",
                Annotated[_literal(self.surfaces), Meta(description="Where the item was shown.")],
                msgspec.NODEFAULT,
            ),
        ]
        for f in self.fields:
            t: Any = f.python_type
            meta = Meta(description=f.description) if f.description else None
            if meta is not None:
                t = Annotated[t, meta]
            extra.append((f.name, t, msgspec.NODEFAULT) if f.required else (f.name, t | None, None))
        required = [x for x in extra if x[2] is msgspec.NODEFAULT]
        optional = [x for x in extra if x[2] is not msgspec.NODEFAULT]
        struct: Any = msgspec.defstruct(
            "ActivityEvent",
            [(n, t) for n, t, _ in required] + list(optional),
            bases=(ActivityEvent,),
            frozen=True,
            # a required declared field after the optional ones can only be a keyword
            kw_only=len(required) > 2,
        )
        struct.__doc__ = (
            "One user action. Topic `activity`, key `user_id`. Unknown extra fields are "
            "ignored; the declared ones are typed."
        )
        result: type[ActivityEvent] = struct
        return result

    def decode(self, raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> ActivityEvent:
        """Decode and validate one activity event; raise ``ContractError`` only."""
        ev = decode(self.event_type, raw, max_bytes)
        check_event(ev)
        for f in self.fields:
            if f.type == "int":
                value = getattr(ev, f.name)
                if value is not None:
                    check_event_int(value, f.name)
        return ev

    def check_surface(self, surface: str) -> None:
        """Raise ``ContractError`` unless ``surface`` is declared."""
        if surface not in self.surfaces:
            raise ContractError(
                "invalid_value",
                f"expected surface in {sorted(self.surfaces)}, got {surface!r}",
            )

    def info(self) -> dict[str, Any]:
        """The declarations as JSON-safe data."""
        return {
            "types": dict(self.roles),
            "surfaces": list(self.surfaces),
            "entities": dict(self.entity_keys),
            "fields": {f.name: f.type for f in self.fields},
        }


def check_event_int(value: int, where: str) -> None:
    """An integer field's value must fit in 64 bits."""
    if not -(1 << 63) <= value < (1 << 63):
        raise ContractError(
            "invalid_value", f"expected a 64-bit integer at {where}, got {len(str(value))} digits"
        )
