"""Point-in-time training sets: each row gets its features as they stood strictly before
its time, like Feast's historical retrieval (an as-of join).

The *entity table* has a column per entity key it looks up (``user_id``, ``item_id``, or
a project entity's key field) and a time column (epoch seconds, or timestamps). Every row
gets one column per feature of each entity it names (the project's catalog,
``streamlearn.streams.catalog.features``), holding the value computed from the events
*strictly before* the row's time. Two sources rebuild those values:

* ``activity`` (default): the ``activity`` topic, re-aggregated in event-time order with
  the accumulators the feature processor uses (``streamlearn.streams.features.aggregates``). Exact
  at any time: an event at the row's time or later never counts.
* ``features``: the changelog. Each entity's newest record whose ``ts`` (the time of the
  newest event it reflects) is before the row's time, partials merged: what the
  online store held. It moves at the processor's commits, so a commit that took in events
  on both sides of the row's time is left out whole: values can be one commit interval
  stale, never from the future.

Features computed when read (``SecondsSince``, ``WindowedCount``) are computed against the row's
time, as serving computes them against the request's. An entity without an event before the row's
time gets nulls (serving would substitute each feature's default).

The engine (:func:`as_of`) is plain Python over decoded records: rows and records are
sorted by time once, then swept together, applying each record before the first row at
or after its time. The topics are read with ``streamlearn.offline.replay`` (which copes with the
embedded broker's offsets), into memory: about 200 bytes per activity event.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamlearn.offline.dataset import read_manifest
from streamlearn.offline.errors import DatasetError
from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.offline.tables import read_table
from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.catalog.features import Feature, FeatureCatalog, SecondsSince
from streamlearn.streams.contracts import ActivityEvent, Scalar
from streamlearn.streams.features.aggregates import Aggregate, EntityLayout, layout
from streamlearn.streams.features.store import RAW_PREFIX
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

Source = Literal["activity", "features"]
SOURCES: tuple[Source, ...] = ("activity", "features")


class FeatureRecordRow(msgspec.Struct, frozen=True):
    """One changelog record: an entity's (partial) values as of ``ts``, from ``partition``."""

    entity: str
    id: str
    partition: int
    ts: float
    values: dict[str, Scalar]


@dataclass(frozen=True)
class EntityRows:
    """What to look up: per row, a time and the id of each entity named (``None``: none)."""

    times: np.ndarray  # float64 epoch seconds, one per row
    ids: Mapping[str, Sequence[str | None]] = field(default_factory=dict)  # entity → ids

    def __post_init__(self) -> None:
        for entity, ids in self.ids.items():
            if len(ids) != len(self.times):
                raise DatasetError(
                    f"expected one {entity} id per row ({len(self.times)}), got {len(ids)}"
                )


class _State:
    """Current accumulators (activity) or partial values (changelog) per entity."""

    def __init__(self, catalog: FeatureCatalog) -> None:
        entities = catalog.entities
        self.keys = [(e, catalog.schema.entity_keys[e]) for e in entities]
        self.layouts: dict[str, EntityLayout] = {e: layout(catalog, e) for e in entities}
        self.aggs: dict[str, dict[str, Aggregate]] = {e: {} for e in entities}
        self.partials: dict[str, dict[str, dict[int, Mapping[str, Scalar]]]] = {
            e: {} for e in entities
        }

    def apply_event(self, ev: ActivityEvent) -> None:
        for entity, key in self.keys:
            eid = getattr(ev, key, None)
            if not eid:
                continue
            aggs = self.aggs[entity]
            agg = aggs.get(eid)
            lay = self.layouts[entity]
            if agg is None:
                agg = aggs[eid] = lay.new()
            lay.update(agg, ev)

    def apply_record(self, rec: FeatureRecordRow) -> None:
        if rec.entity in self.partials:
            self.partials[rec.entity].setdefault(rec.id, {})[rec.partition] = rec.values

    def values(self, entity: str, eid: str) -> dict[str, Scalar] | None:
        lay = self.layouts[entity]
        agg = self.aggs[entity].get(eid)
        if agg is None:
            parts = self.partials[entity].get(eid)
            if not parts:
                return None
            agg = lay.merge([lay.from_values(v) for v in parts.values()])
        return lay.values(agg)


def _columns(catalog: FeatureCatalog, entities: Iterable[str]) -> list[Feature]:
    return [f for e in entities for f in catalog.of(e)]


def as_of(
    rows: EntityRows,
    events: Iterable[ActivityEvent] = (),
    records: Iterable[FeatureRecordRow] = (),
    *,
    catalog: FeatureCatalog,
) -> dict[str, list[Scalar | None]]:
    """Feature columns for ``rows``: values from the events / changelog records whose time
    is strictly before each row's time (see the module docstring).

    Give ``events`` (the activity source) or ``records`` (the changelog source), not both.
    Returns ``{feature name: [value or None per row]}`` for every feature of the entities
    ``rows`` names, in catalog order.
    """
    stream: list[tuple[float, Any]] = [(ev.ts, ev) for ev in events]
    changelog = [(rec.ts, rec) for rec in records]
    if stream and changelog:
        raise ValueError("expected activity events or changelog records, got both")
    stream += changelog
    stream.sort(key=lambda x: x[0])  # stable: records of one time keep their topic order
    state = _State(catalog)
    features = _columns(catalog, rows.ids)
    out: dict[str, list[Scalar | None]] = {f.name: [None] * len(rows.times) for f in features}
    since = {
        f.name: f.aggregation.feature for f in features if isinstance(f.aggregation, SecondsSince)
    }
    order = np.argsort(rows.times, kind="stable")
    i = 0
    for r in order.tolist():
        t = float(rows.times[r])
        if math.isnan(t):
            continue
        while i < len(stream) and stream[i][0] < t:
            item = stream[i][1]
            if isinstance(item, FeatureRecordRow):
                state.apply_record(item)
            else:
                state.apply_event(item)
            i += 1
        for entity, ids in rows.ids.items():
            eid = ids[r]
            values = None if eid is None else state.values(entity, eid)
            if values is None:
                continue
            windowed = state.layouts[entity].read_time_values(values, t)
            for f in catalog.of(entity):
                if f.name in windowed:
                    out[f.name][r] = windowed[f.name]
                elif f.name in since:
                    last = values.get(since[f.name])
                    out[f.name][r] = round(t - float(last), 3) if last else -1.0
                elif not f.name.startswith(RAW_PREFIX):
                    out[f.name][r] = values.get(f.name)
    return out


# -- files and topics ---------------------------------------------------------------------


def entity_rows(table: pa.Table, time_column: str, catalog: FeatureCatalog) -> EntityRows:
    """The lookups of an entity table: its time column and its entity key columns (of the
    entities that have features)."""
    if time_column not in table.column_names:
        raise DatasetError(
            f"expected a time column {time_column!r}, got columns {table.column_names}"
        )
    keys = {e: catalog.schema.entity_keys[e] for e in catalog.entities}
    ids = {
        entity: [None if v is None else str(v) for v in table.column(key).to_pylist()]
        for entity, key in keys.items()
        if key in table.column_names
    }
    if not ids:
        raise DatasetError(
            f"expected an entity column among {sorted(keys.values())}, "
            f"got columns {table.column_names}"
        )
    return EntityRows(_epoch_seconds(table.column(time_column), time_column), ids)


def _epoch_seconds(col: pa.ChunkedArray, name: str) -> np.ndarray:
    t = col.type
    if pa.types.is_timestamp(t):
        ns = pc.cast(col, pa.timestamp("ns", tz=t.tz)).cast(pa.int64())
        return ns.to_numpy(zero_copy_only=False).astype(np.float64) / 1e9
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = []
        for v in col.to_pylist():
            try:
                out.append(math.nan if v is None else _iso_seconds(v))
            except ValueError:
                raise DatasetError(
                    f"time column {name!r}: expected epoch seconds or ISO 8601 times, got {v!r}"
                ) from None
        return np.asarray(out, dtype=np.float64)
    raise DatasetError(f"time column {name!r}: expected epoch seconds or timestamps, got type {t}")


def _iso_seconds(text: str) -> float:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # naive means UTC, as in replay bounds
    return when.timestamp()


def read_events(dataset: Path, schema: EventSchema) -> list[ActivityEvent]:
    """Activity events of a replayed dataset (``streamlearn replay``, format ``event``),
    with the project's declared fields where the dataset has them."""
    _expect_format(dataset, "event")
    cols = ["type", "ts", "user_id", "item_id", "surface", "request_id", "context"]
    table = read_table(dataset)
    extra = [f.name for f in schema.fields if f.name in table.column_names]
    decode_ctx = msgspec.json.Decoder(dict[str, Scalar]).decode
    data = table.select(["event_id", *cols, *extra]).to_pydict()
    make = schema.event_type
    out = []
    for i, eid in enumerate(data["event_id"]):
        ctx = data["context"][i]
        fields = {n: data[n][i] for n in extra}
        out.append(
            make(
                event_id=eid,
                type=data["type"][i],
                ts=data["ts"][i],
                user_id=data["user_id"][i],
                item_id=data["item_id"][i],
                surface=data["surface"][i],
                request_id=data["request_id"][i],
                context=decode_ctx(ctx) if ctx else None,
                **fields,
            )
        )
    return out


def read_records(dataset: Path) -> list[FeatureRecordRow]:
    """Feature records of a replayed ``features`` topic (format ``json``); control records
    (keys starting ``__``) are left out."""
    _expect_format(dataset, "json")
    table = read_table(dataset, columns=["key", "partition", "value"])
    decode = msgspec.json.Decoder(_Record).decode
    out = []
    for key, partition, value in zip(*table.to_pydict().values(), strict=True):
        if key is None or key.startswith("__"):
            continue
        rec = decode(value)
        out.append(FeatureRecordRow(rec.entity, rec.id, partition, rec.ts, rec.values))
    return out


class _Record(msgspec.Struct):
    entity: str
    id: str
    values: dict[str, Scalar]
    ts: float


def _expect_format(dataset: Path, fmt: str) -> None:
    got = read_manifest(dataset).get("format")
    if got != fmt:
        raise DatasetError(
            f"expected a replayed dataset of format {fmt!r} at {dataset}, got {got!r}"
        )


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    out: Path
    rows: int
    source: Source
    source_records: int
    features: tuple[str, ...]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {
            "out": str(self.out),
            "rows": self.rows,
            "source": self.source,
            "source_records": self.source_records,
            "features": list(self.features),
            "seconds": round(self.seconds, 3),
        }


def export(
    entities: pa.Table,
    out: Path,
    *,
    time_column: str = "ts",
    source: Source = "activity",
    kafka: KafkaConfig | None = None,
    dataset: Path | None = None,
    catalog: FeatureCatalog,
) -> ExportResult:
    """Write ``entities`` with their point-in-time feature columns to the Parquet ``out``.

    The source is read from ``dataset`` (a replayed dataset of the source topic) when
    given, else replayed from the broker of ``kafka`` (topics under its prefix).
    """
    started = time.monotonic()
    if source not in SOURCES:
        raise DatasetError(f"expected source among {SOURCES}, got {source!r}")
    rows = entity_rows(entities, time_column, catalog)
    clash = sorted(set(entities.column_names) & {f.name for f in catalog})
    if clash:
        raise DatasetError(f"the entity table already has feature columns {clash}")
    if dataset is None:
        if kafka is None:
            raise DatasetError("expected a broker (kafka) or a replayed dataset, got neither")
        with tempfile.TemporaryDirectory(prefix="streamlearn-export-") as tmp:
            topics = Topics(kafka.topic_prefix)
            topic = topics.activity if source == "activity" else topics.features
            fmt = "event" if source == "activity" else "json"
            spec = ReplaySpec((topic,), format=fmt, schema=catalog.schema)
            replay(kafka, spec, Path(tmp) / "replay")
            columns, n = _lookup(rows, Path(tmp) / "replay", source, catalog)
    else:
        columns, n = _lookup(rows, dataset, source, catalog)
    table = entities
    for f in _columns(catalog, rows.ids):
        arrow_type = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[f.type]
        table = table.append_column(f.name, pa.array(columns[f.name], type=arrow_type))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    return ExportResult(
        out,
        table.num_rows,
        source,
        n,
        tuple(f.name for f in _columns(catalog, rows.ids)),
        time.monotonic() - started,
    )


def _lookup(
    rows: EntityRows, dataset: Path, source: Source, catalog: FeatureCatalog
) -> tuple[dict[str, list[Scalar | None]], int]:
    if source == "activity":
        events = read_events(dataset, catalog.schema)
        return as_of(rows, events=events, catalog=catalog), len(events)
    records = read_records(dataset)
    return as_of(rows, records=records, catalog=catalog), len(records)
