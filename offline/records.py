"""Record formats of a replay: how a Kafka value becomes the decoded columns of a row.

Every row starts with the source columns ``topic, partition, offset, timestamp, key``;
the format adds its own:

* ``event`` — an activity event, validated by the project's contract
  (``streamlearn.streams.catalog.events.EventSchema``; without one, any type and surface):
  ``event_id, type, ts, user_id, item_id, surface, request_id, position, context``
  (``context`` as JSON), then the project's declared fields;
* ``training`` — a ``TrainingExample``: ``request_id, user_id, item_id, surface, ts,
  label, features, served_version, served_score, served`` (``features`` as JSON with
  sorted keys);
* ``json`` — any JSON value: ``value`` (the record as compact JSON with sorted keys).

A record that does not decode raises :class:`~streamlearn.streams.errors.ContractError`; the replay
writes it aside (``rejected.jsonl``) with the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from streamlearn.offline.errors import RangeError
from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.contracts import ActivityEvent, TrainingExample, check_event, decode
from streamlearn.streams.errors import ContractError

SOURCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("topic", pa.string(), nullable=False),
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("key", pa.string()),
)
SOURCE_COLUMNS = tuple(f.name for f in SOURCE_FIELDS)


def _json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def _any_event(raw: bytes | None) -> ActivityEvent:
    ev = decode(ActivityEvent, raw)
    check_event(ev)
    return ev


def _event_decoder(
    schema: EventSchema | None,
) -> Callable[[bytes | None], tuple[Any, ...]]:
    decode_event = _any_event if schema is None else schema.decode
    extra = () if schema is None else tuple(f.name for f in schema.fields)

    def event(raw: bytes | None) -> tuple[Any, ...]:
        ev = decode_event(raw)
        ctx = None if ev.context is None else _json(ev.context)
        return (
            ev.event_id,
            ev.type,
            ev.ts,
            ev.user_id,
            ev.item_id,
            ev.surface,
            ev.request_id,
            ev.position,
            ctx,
            *(getattr(ev, n) for n in extra),
        )

    return event


def _training(raw: bytes | None) -> tuple[Any, ...]:
    ex = decode(TrainingExample, raw)  # the label is 0 or 1 by the contract
    return (
        ex.request_id,
        ex.user_id,
        ex.item_id,
        ex.surface,
        ex.ts,
        ex.label,
        _json(ex.features),
        ex.served_version,
        ex.served_score,
        ex.served,
    )


def _any_json(raw: bytes | None) -> tuple[Any, ...]:
    if raw is None:
        raise ContractError("missing_value", "expected a JSON value, got an empty message")
    try:
        return (_json(orjson.loads(raw)),)
    except orjson.JSONDecodeError as exc:
        raise ContractError("bad_json", f"expected JSON: {exc}") from None


@dataclass(frozen=True)
class RecordFormat:
    """A named decoder from Kafka value bytes to a tuple of typed columns."""

    name: str
    fields: tuple[pa.Field, ...]
    decode: Callable[[bytes | None], tuple[Any, ...]]

    @property
    def schema(self) -> pa.Schema:
        """The full row schema: source columns, then the decoded ones."""
        return pa.schema([*SOURCE_FIELDS, *self.fields])


_S = pa.string()
_ARROW: dict[str, pa.DataType] = {
    "str": _S,
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}


def event_format(schema: EventSchema | None) -> RecordFormat:
    """The ``event`` format of a project's activity events (``None``: any events)."""
    return RecordFormat(
        "event",
        (
            *(pa.field(n, _S) for n in ("event_id", "type")),
            pa.field("ts", pa.float64()),
            *(pa.field(n, _S) for n in ("user_id", "item_id", "surface", "request_id")),
            pa.field("position", pa.int64()),
            pa.field("context", _S),
            *(pa.field(f.name, _ARROW[str(f.type)]) for f in (schema.fields if schema else ())),
        ),
        _event_decoder(schema),
    )


FORMATS: dict[str, RecordFormat] = {
    "event": event_format(None),
    "training": RecordFormat(
        "training",
        (
            *(pa.field(n, _S) for n in ("request_id", "user_id", "item_id", "surface")),
            pa.field("ts", pa.float64()),
            pa.field("label", pa.int8()),
            pa.field("features", _S),
            pa.field("served_version", pa.int64()),
            pa.field("served_score", pa.float64()),
            pa.field("served", pa.bool_()),
        ),
        _training,
    ),
    "json": RecordFormat("json", (pa.field("value", _S),), _any_json),
}


def guess_format(topic: str) -> str:
    """``event`` for activity topics, ``training`` for training-example topics, else ``json``."""
    if topic.endswith("activity"):
        return "event"
    if ".training-examples." in f".{topic}":
        return "training"
    return "json"


def resolve_format(
    name: str, topics: Sequence[str], schema: EventSchema | None = None
) -> RecordFormat:
    """The format ``name``, or for ``auto`` the one every topic's name suggests; ``event``
    follows ``schema`` when given."""
    if name == "auto":
        guesses = {guess_format(t) for t in topics}
        if len(guesses) != 1:
            raise RangeError(
                f"topics {list(topics)} suggest different formats {sorted(guesses)}; "
                "expected one: pass --format"
            )
        name = guesses.pop()
    if name == "event":
        return event_format(schema)
    try:
        return FORMATS[name]
    except KeyError:
        raise RangeError(f"format must be auto or one of {sorted(FORMATS)}, got {name!r}") from None


class RowBuffer:
    """Column lists for one row group of a :class:`RecordFormat`."""

    def __init__(self, fmt: RecordFormat) -> None:
        self.schema = fmt.schema
        self._cols: list[list[Any]] = [[] for _ in self.schema]

    def __len__(self) -> int:
        return len(self._cols[0])

    def append(self, source: tuple[Any, ...], decoded: tuple[Any, ...]) -> None:
        """Add one row: the five source values, then the decoded ones."""
        for col, v in zip(self._cols, source + decoded, strict=True):
            col.append(v)

    def flush(self) -> pa.RecordBatch:
        """The buffered rows as a record batch; the buffer is emptied."""
        arrays = [pa.array(c, type=f.type) for c, f in zip(self._cols, self.schema, strict=True)]
        self._cols = [[] for _ in self.schema]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)
