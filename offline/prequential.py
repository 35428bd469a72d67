"""Prequential (predict-then-learn) evaluation of a learner on a file: the ``eval`` engine.

The file (CSV, JSONL or Parquet) is read whole with pyarrow, optionally ordered by a
time column, and streamed through the learner in mini-batches: each batch is featurised,
scored, and only then learnt (``predict_learn_encoded``), and the scores feed
:class:`~models.metrics.ProgressiveMetrics`. Throughput counts featurisation, prediction
and learning; reading the file and the metrics are left out.

Feature columns are every column but the label and time columns (or ``features``):
string, boolean and dictionary columns are categorical, integer and float columns
numeric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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


class EvalError(DatasetError, ModelError):
    """The evaluation file, a column or a label is not usable (both roots catch it)."""


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate, and how."""

    data: Path
    label: str
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


def prepare(config: EvalConfig) -> tuple[list[dict[str, Any]], np.ndarray, FeatureSpec]:
    """Rows (time-ordered when asked), labels and the inferred feature spec."""
    table = read_table(config.data)
    names = table.column_names
    needed = [config.label] + ([config.time_column] if config.time_column else [])
    needed += list(config.features or ())
    missing = [c for c in needed if c not in names]
    if missing:
        raise EvalError(f"columns {missing} not found in {config.data}; it has {names}")
    if config.time_column:
        order = pc.sort_indices(table, sort_keys=[(config.time_column, "ascending")])
        table = table.take(order)
    reserved = {config.label, config.time_column}
    features = list(config.features) if config.features else [c for c in names if c not in reserved]
    if not features:
        raise EvalError(f"expected at least one feature column besides the label in {config.data}")
    clash = [c for c in features if c in reserved]
    if clash:
        raise EvalError(f"feature columns must not include the label or time column, got {clash}")
    y = _labels(table, config.label)
    spec = feature_spec(table, features, config.hash_bits)
    return table.select(features).to_pylist(), y, spec


def evaluate(config: EvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prequential evaluation; returns the summary (``examples``, ``auc``, …)."""
    if config.batch_size < 1:
        raise EvalError(f"batch size must be >= 1, got {config.batch_size}")
    rows, y, spec = prepare(config)
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
    }
