"""Prequential (predict-then-learn) evaluation of a learner on a file: the ``eval`` engine.

The file (CSV, JSONL or Parquet) is read whole with pyarrow, optionally ordered by a
time column, and streamed through the learner in mini-batches: each batch is featurised,
scored, and only then learnt (``predict_learn_encoded``), and the scores feed
:class:`~models.metrics.ProgressiveMetrics`. Throughput counts featurisation, prediction
and learning; reading the file and the metrics are left out.

Feature columns are every column but the label and time columns (or ``features``):
string, boolean and dictionary columns are categorical, integer and float columns
numeric.

Training-example rows (a replayed ``training-examples.<model>`` topic, or any file whose
``features`` column holds JSON objects) are expanded: each key of ``features`` becomes a
column (all-number keys numeric, the others categorical), the default feature columns are
those keys, the label defaults to ``label`` and the time column to ``ts``. Rows are
ordered by the time column, ties broken by ``topic``, ``partition`` and ``offset`` when
present, so a replay is always evaluated in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from models.errors import ModelError
from models.features import FeatureSpec
from models.metrics import ProgressiveMetrics
from models.zoo import create
from offline.errors import DatasetError

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, report)``: called after every reporting interval and at the end."""

_FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


DEFAULT_LABEL = "label"
DEFAULT_TIME = "ts"
FEATURES_COLUMN = "features"
_TIE_BREAK = ("topic", "partition", "offset")


class EvalError(DatasetError, ModelError):
    """The evaluation file, a column or a label is not usable (both roots catch it)."""


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate, and how."""

    data: Path
    label: str | None = None
    time_column: str | None = None
    features: tuple[str, ...] | None = None
    model: str = "ftrl"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 1000
    hash_bits: int = 20
    window: int = 10_000
    report_every: int = 50_000


def read_table(path: Path) -> pa.Table:
    """A CSV, JSONL or Parquet file as an arrow table; :class:`EvalError` otherwise."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EvalError(f"data file must end in one of {sorted(_FORMATS)}, got {path.name!r}")
    if not path.is_file():
        raise EvalError(f"expected a data file at {path}, found none")
    try:
        if fmt == "csv":
            return pa_csv.read_csv(path)
        if fmt == "jsonl":
            return pa_json.read_json(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalError(f"cannot read {path} as {fmt}: {exc}") from exc


def _labels(table: pa.Table, label: str) -> np.ndarray:
    column = table.column(label)
    if column.null_count:
        raise EvalError(f"label column {label!r} must have no nulls, got {column.null_count}")
    if not (
        pa.types.is_boolean(column.type)
        or pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
    ):
        raise EvalError(f"label column {label!r} must be 0/1 or boolean, got type {column.type}")
    y = column.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.unique(y[(y != 0.0) & (y != 1.0)])
    if bad.size:
        raise EvalError(f"label column {label!r} must hold 0 or 1, got also {bad[:5].tolist()}")
    return y


def feature_spec(table: pa.Table, feature_columns: Sequence[str], hash_bits: int) -> FeatureSpec:
    """Categorical for strings, booleans and dictionaries; numeric for numbers."""
    categorical: list[str] = []
    numeric: list[str] = []
    for name in feature_columns:
        t = table.schema.field(name).type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            numeric.append(name)
        elif (
            pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_boolean(t)
            or pa.types.is_dictionary(t)
            or pa.types.is_null(t)
        ):
            categorical.append(name)
        else:
            raise EvalError(
                f"feature column {name!r} must be a string, boolean or number, got type {t}"
            )
    return FeatureSpec(categorical=tuple(categorical), numeric=tuple(numeric), hash_bits=hash_bits)


def _feature_dicts(column: pa.ChunkedArray) -> list[dict[str, Any] | None] | None:
    """The rows of a ``features`` column as dicts, or ``None`` when it holds no JSON objects."""
    if pa.types.is_struct(column.type):
        return column.to_pylist()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    rows: list[dict[str, Any] | None] = []
    for text in column.to_pylist():
        if text is None:
            rows.append(None)
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        rows.append(obj)
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def expand_features(table: pa.Table, reserved: Sequence[str] = ()) -> tuple[pa.Table, list[str]]:
    """Expand a ``features`` column of JSON objects into one column per key.

    Returns the table (``features`` replaced by the key columns, which win over top-level
    columns of the same name) and the keys, sorted; ``(table, [])`` unchanged
    when there is no such column. A key that is a number in every row is numeric
    (float64), any other key categorical (strings); a key missing from a row is null.
    """
    if FEATURES_COLUMN not in table.column_names:
        return table, []
    dicts = _feature_dicts(table.column(FEATURES_COLUMN))
    if dicts is None:
        return table, []
    keys: dict[str, None] = {}
    for d in dicts:
        for k in d or ():
            keys.setdefault(k, None)
    clash = [k for k in sorted(keys) if k in reserved]
    if clash:
        raise EvalError(
            f"feature keys {clash} clash with the label or time column; pass --label/--time-column"
        )
    columns: dict[str, pa.Array] = {}
    for k in sorted(keys):
        values = [None if d is None else d.get(k) for d in dicts]
        present = [v for v in values if v is not None]
        if present and all(_is_number(v) for v in present):
            columns[k] = pa.array(values, type=pa.float64())
        else:
            columns[k] = pa.array([None if v is None else str(v) for v in values], pa.string())
    rest = [c for c in table.column_names if c != FEATURES_COLUMN and c not in columns]
    out = table.select(rest)
    for k, arr in columns.items():
        out = out.append_column(k, arr)
    return out, list(columns)


@dataclass(frozen=True)
class Prepared:
    """The rows to stream (in order), their labels, the feature spec, the columns used."""

    rows: list[dict[str, Any]]
    y: np.ndarray
    spec: FeatureSpec
    label: str
    time_column: str | None


def prepare(config: EvalConfig) -> Prepared:
    """Rows (time-ordered when asked), labels and the inferred feature spec."""
    table = read_table(config.data)
    label = config.label or DEFAULT_LABEL
    time_column = config.time_column
    default_time = DEFAULT_TIME if DEFAULT_TIME in table.column_names else None
    table, keys = expand_features(table, [c for c in (label, time_column or default_time) if c])
    if keys and time_column is None:
        time_column = default_time  # ``ts`` orders training-example rows unless told otherwise
    names = table.column_names
    needed = [label] + ([time_column] if time_column else [])
    needed += list(config.features or ())
    missing = [c for c in needed if c not in names]
    if missing:
        hint = "" if config.label or label not in missing else " (pass --label)"
        raise EvalError(f"columns {missing} not found in {config.data}{hint}; it has {names}")
    if time_column:
        ties = [(c, "ascending") for c in _TIE_BREAK if c in names and c != time_column]
        order = pc.sort_indices(table, sort_keys=[(time_column, "ascending"), *ties])
        table = table.take(order)
    reserved = {label, time_column}
    if config.features:
        features = list(config.features)
    else:
        features = keys or [c for c in names if c not in reserved]
    if not features:
        raise EvalError(f"expected at least one feature column besides the label in {config.data}")
    clash = [c for c in features if c in reserved]
    if clash:
        raise EvalError(f"feature columns must not include the label or time column, got {clash}")
    y = _labels(table, label)
    spec = feature_spec(table, features, config.hash_bits)
    return Prepared(table.select(features).to_pylist(), y, spec, label, time_column)


def evaluate(config: EvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prequential evaluation; returns the summary (``examples``, ``auc``, …)."""
    if config.batch_size < 1:
        raise EvalError(f"batch size must be >= 1, got {config.batch_size}")
    prepared = prepare(config)
    rows, y, spec = prepared.rows, prepared.y, prepared.spec
    learner = create(config.model, spec, seed=config.seed, **config.params)
    metrics = ProgressiveMetrics(window=config.window)
    total = len(rows)
    busy = 0.0
    next_report = config.report_every
    featurise = learner.featuriser.transform_many
    for start in range(0, total, config.batch_size):
        stop = min(start + config.batch_size, total)
        t0 = time.perf_counter()
        idx, val = featurise(rows[start:stop])
        p = learner.predict_learn_encoded(idx, val, y[start:stop])
        busy += time.perf_counter() - t0
        metrics.update(y[start:stop], p)
        if progress is not None and (stop >= next_report or stop == total):
            next_report = stop + config.report_every
            progress(stop, total, {**metrics.report(), "examples_per_s": stop / max(busy, 1e-9)})
    return {
        **metrics.report(),
        "examples": total,
        "positive_rate": float(y.mean()) if total else None,
        "examples_per_s": total / busy if busy > 0 else None,
        "seconds": busy,
        "model": config.model,
        "params": dict(config.params),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "feature_spec": spec.to_dict(),
        "data": str(config.data),
        "label": prepared.label,
        "time_column": prepared.time_column,
    }
