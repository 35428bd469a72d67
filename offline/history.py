"""A historical log published as a project's activity events (``streamlearn produce --log``).

A team that starts from history has a log of past impressions and engagements and no
serving yet. Each row of the log (CSV, Parquet or JSON lines) becomes one activity event
of the project, checked against its contract before it is sent:

* the time column (``--time-column``, epoch seconds or ISO 8601) becomes ``ts``;
* ``type``, ``user_id``, ``item_id``, ``surface``, ``request_id``, ``position`` and
  ``event_id`` are taken from the columns of those names (ids as text: a CSV's ``007``
  stays ``"007"``); a row without an ``event_id``
  gets ``<log>-<row>`` (``<log>`` a digest of the file's name and size, so publishing the
  same log again gives the same ids), one without a ``request_id`` gets ``<log>-r<row>``
  (an engagement joins its impression by ``request_id`` and ``item_id``: a log whose
  engagements should label its impressions needs the column);
* the project's declared fields are taken from the columns of their names (a CSV's
  cell parsed as the declared type: a ``str`` field of digits stays text);
* every other non-empty column goes into ``context`` (merged into a ``context`` column's
  object, if the log has one); a CSV cell that reads as a number is a number there.

A row that does not make a valid event is counted and skipped (the first errors are
reported), unless ``strict``. Rows are sent in file order; with ``speed`` above 0 they are
paced at that many times real time by their times (a replay of a day at ``speed=24``
takes an hour), else sent as fast as the producer takes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow.parquet as pq

from streamlearn.offline.errors import DatasetError, OfflineError
from streamlearn.offline.produce import number, read_records
from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig

#: Columns that become the event's own fields (the rest: declared fields, then context).
_EVENT_COLUMNS: Final = ("event_id", "type", "user_id", "item_id", "surface", "request_id")
#: Errors reported in full; the others are counted.
MAX_ERRORS: Final = 5


@dataclass
class LogResult:
    """What publishing a log did."""

    topic: str
    events: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None
    #: rows whose time is before the previous row's (the log is not in time order)
    out_of_order: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "topic": self.topic,
            "events_produced": self.events,
            "rejected": self.rejected,
            "errors": self.errors,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "out_of_order": self.out_of_order,
            "seconds": round(self.seconds, 3),
            "rate": round(self.events / self.seconds, 1) if self.seconds > 0 else None,
        }


def count_rows(path: Path) -> int | None:
    """Rows in the log, when cheap to know (for a progress bar)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if path.suffix in (".csv", ".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as fh:
            lines = sum(1 for line in fh if line.strip())
        return max(0, lines - 1) if path.suffix == ".csv" else lines
    return None


def seconds(value: Any, column: str) -> float:
    """Epoch seconds of a time cell: a number, or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a time in column {column!r}, got {value!r}")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # else ISO 8601
            value = float(value)
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, datetime):
        out = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    else:
        when = datetime.fromisoformat(str(value))
        out = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"expected a time at or after 1970 in column {column!r}, got {value!r}")
    return out


_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def typed(value: Any, kind: str, column: str) -> Any:
    """A cell as a value of a declared field's type (``str``, ``int``, ``float``,
    ``bool``): a ``str`` field takes any value as text, the others parse text; any other
    value is left for the contract to check. :class:`ValueError` names the column."""
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)  # a column of ints with gaps, read as floats
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"expected {kind} in column {column!r}, got {value!r}") from None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"expected bool (true/false) in column {column!r}, got {value!r}")


class EventMaker:
    """Turns log rows into a project's encoded activity events (see the module docstring).

    ``text``: the rows' cells are text (a CSV): the typed columns are parsed as their
    types, and a context cell that reads as a number becomes one.
    """

    def __init__(
        self, schema: EventSchema, time_column: str, log_id: str, text: bool = False
    ) -> None:
        self.schema = schema
        self.time_column = time_column
        self.log_id = log_id
        self.text = text
        self._fields = {f.name: str(f.type) for f in schema.fields}

    def event(self, row: Mapping[str, Any], n: int) -> tuple[bytes, float, str]:
        """The encoded event of row ``n``, its time and its user (the key);
        :class:`ValueError` or ``ContractError`` when the row does not make a valid event."""
        rec = dict(row)
        if self.time_column not in rec:
            raise ValueError(f"no time column {self.time_column!r} (columns: {sorted(rec)})")
        ts = seconds(rec.pop(self.time_column), self.time_column)
        ev: dict[str, Any] = {"ts": ts}
        for name in _EVENT_COLUMNS:
            if name in rec:
                ev[name] = str(rec.pop(name))
        ev.setdefault("event_id", f"{self.log_id}-{n}")
        ev.setdefault("request_id", f"{self.log_id}-r{n}")
        if "position" in rec:
            position = rec.pop("position")
            ev["position"] = typed(position, "int", "position") if self.text else int(position)
        for name in self._fields.keys() & rec.keys():
            value = rec.pop(name)
            ev[name] = typed(value, self._fields[name], name) if self.text else value
        context = rec.pop("context", None) or {}
        if isinstance(context, str) and self.text:
            context = orjson.loads(context)
        if not isinstance(context, dict):
            raise ValueError(f"expected the context column to hold an object, got {context!r}")
        if self.text:
            rec = {k: number(v) if isinstance(v, str) else v for k, v in rec.items()}
        context.update((k, v) for k, v in rec.items() if isinstance(v, str | int | float))
        if context:
            ev["context"] = context
        raw = orjson.dumps(ev)
        self.schema.decode(raw)  # the contract's ContractError names what is wrong
        return raw, ts, ev["user_id"]


def log_id(path: Path) -> str:
    """A short id of a log file: the digest of its name and size."""
    stat = Path(path).stat()
    return hashlib.sha1(f"{Path(path).name}:{stat.st_size}".encode()).hexdigest()[:10]


def produce_log(
    config: KafkaConfig,
    topic: str,
    schema: EventSchema,
    path: Path,
    *,
    time_column: str = "ts",
    speed: float = 0.0,
    strict: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LogResult:
    """Publish the rows of the log at ``path`` to ``topic`` as events of ``schema``."""
    path = Path(path)
    text = path.suffix == ".csv"
    rows: Iterator[dict[str, Any]] = read_records(path, numbers=not text)
    maker = EventMaker(schema, time_column, log_id(path), text=text)
    result = LogResult(topic)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = make_producer(config)
    started = clock()
    previous = -math.inf
    for n, row in enumerate(rows):
        if limit is not None and result.events >= limit:
            break
        try:
            raw, ts, user = maker.event(row, n)
        except (ContractError, ValueError, TypeError) as exc:
            if strict:
                raise DatasetError(f"{path}: row {n + 1}: {exc}") from None
            result.rejected += 1
            if len(result.errors) < MAX_ERRORS:
                result.errors.append(f"row {n + 1}: {exc}")
            continue
        if ts < previous:
            result.out_of_order += 1
        previous = max(previous, ts)
        if result.first_ts is None:
            result.first_ts = ts
        result.last_ts = ts if result.last_ts is None else max(result.last_ts, ts)
        if speed > 0:
            due = started + (ts - result.first_ts) / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        produce(producer, topic, raw, user, on_delivery=on_delivery)
        result.events += 1
        if result.events % 1000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(n + 1)
    flush(producer)
    result.seconds = clock() - started
    if progress is not None:
        progress(result.events + result.rejected)
    if failures:
        raise OfflineError(
            f"{len(failures)} of {result.events} events to topic={topic} failed: {failures[0]}"
        )
    if result.events == 0 and result.rejected:
        raise DatasetError(
            f"{path}: no row made a valid event of the project ({result.rejected} rejected); "
            f"first: {result.errors[0]}"
        )
    return result
