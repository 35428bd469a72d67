"""Prequential (predict-then-learn) evaluation of learners on a file: the ``eval`` engine.

The file (CSV, JSONL or Parquet) is read whole with pyarrow, optionally ordered by a
time column, and streamed through the learner in mini-batches: each batch is featurised,
scored, and only then learnt (``predict_learn_featurised``), and the scores go into
:class:`~streamlearn.models.metrics.ProgressiveMetrics`. ``ftrl`` and ``fm`` learn one example at a
time inside each batch, so for them the batch size only chunks the work. Throughput
counts featurisation (from Arrow columns, :meth:`Featuriser.transform_columns`),
prediction and learning; reading the file and the metrics are left out.

Feature columns are every column but the label and time columns (or ``features``), less
id columns (a string or integer value on every row, see :mod:`streamlearn.offline.tables`, which
also says how columns become categorical or numeric and how a text label is mapped).
When a feature column's rows come in blocks (``block_column``: found in the data by
default, or named, or ``none``), each numeric column also enters as its z-score within
the block so far (:func:`streamlearn.offline.tables.within_block`: earlier rows of the block and the
row itself, never a label).
:func:`compare_learners` runs several learners on the same prepared stream (``eval`` without
``--model``) and marks the best by AUC. With a model definition
(:class:`~streamlearn.models.definition.ModelDef`, ``eval --definition MODEL``) the learner is built
exactly as the online trainer builds it: the definition's spec, head and parameters.

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
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlearn.models.definition import ModelDef
from streamlearn.models.features import FeatureSpec
from streamlearn.models.metrics import ProgressiveMetrics
from streamlearn.models.protocol import Learner
from streamlearn.models.zoo import DEFAULT_BATCH_SIZE, DEFAULT_LEARNER, create
from streamlearn.offline import tables
from streamlearn.offline.errors import DatasetError, EvalError

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, report)``: called after every reporting interval and at the end."""

DEFAULT_LABEL = "label"
DEFAULT_TIME = "ts"
_TIE_BREAK = ("topic", "partition", "offset")
#: Learners ``eval`` compares when no ``--model`` is given: ours. ``river-lr`` (river's
#: SGD logistic regression on our features) is the baseline, run with ``--model river-lr``
#: and, with river's own pipeline and Vowpal Wabbit, by ``bench/bench_learners.py``.
COMPARED_LEARNERS: Final = ("ftrl", "fm", "deep")
#: 2**20 coordinates: 12 bytes of state per coordinate for ftrl (and the hashing leaves
#: well under 1% of a million distinct values colliding).
DEFAULT_HASH_BITS: Final = 20
#: Numbers enter as sign(x)·log(1+|x|), then each coordinate is normalised online.
DEFAULT_NUMERIC_TRANSFORM: Final = "log1p"
#: ``block_column`` values: find a block column in the data, or use none.
AUTO, NONE = "auto", "none"
#: Rows featurised per Arrow slice (bounds memory on large files).
_SLICE_ROWS = 65_536


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate, and how."""

    data: Path
    label: str | None = None
    time_column: str | None = None
    features: tuple[str, ...] | None = None
    model: str = DEFAULT_LEARNER
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    hash_bits: int = DEFAULT_HASH_BITS
    numeric_transform: str = DEFAULT_NUMERIC_TRANSFORM
    positive: str | None = None
    drop: tuple[str, ...] = ()
    block_column: str = AUTO
    window: int = 10_000
    report_every: int = 50_000
    #: Evaluate this model definition (its spec, head, learner and params; ``model`` and
    #: ``params`` override its learner) instead of a learner over the inferred spec.
    definition: ModelDef | None = None

    def learner(self, spec: FeatureSpec, name: str | None = None) -> Learner:
        """A new learner ``name`` (default ``model``) over ``spec``, or of the definition."""
        if self.definition is not None:
            d = self.definition.with_learner(name or self.model, self.params)
            return d.create(seed=self.seed)
        return create(name or self.model, spec, seed=self.seed, **self.params)


@dataclass(frozen=True)
class Prepared:
    """The table to stream (features only, in order), labels, spec and what was decided."""

    table: pa.Table
    y: np.ndarray
    spec: FeatureSpec
    label: str
    time_column: str | None
    positive: str | None = None
    dropped_ids: tuple[str, ...] = ()
    block_column: str | None = None
    block_features: tuple[str, ...] = ()

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The feature rows as dicts (the trainer's input shape)."""
        return self.table.to_pylist()


def prepare(config: EvalConfig) -> Prepared:
    """Rows (time-ordered when asked), labels and the inferred feature spec."""
    try:
        return _prepare(config)
    except EvalError:
        raise
    except DatasetError as exc:
        raise EvalError(str(exc)) from exc


def _prepare(config: EvalConfig) -> Prepared:
    table = tables.read_table(config.data)
    label = config.label or DEFAULT_LABEL
    time_column = config.time_column
    default_time = DEFAULT_TIME if DEFAULT_TIME in table.column_names else None
    table, keys = tables.expand_features(
        table, [c for c in (label, time_column or default_time) if c]
    )
    if keys and time_column is None:
        time_column = default_time  # ``ts`` orders training-example rows unless told otherwise
    names = table.column_names
    needed = [label] + ([time_column] if time_column else [])
    needed += list(config.features or ()) + list(config.drop)
    if config.block_column not in (AUTO, NONE):
        needed.append(config.block_column)
    missing = [c for c in needed if c not in names]
    if missing:
        hint = "" if config.label or label not in missing else " (pass --label)"
        raise EvalError(f"columns {missing} not found in {config.data}{hint}; it has {names}")
    if time_column:
        ties = [(c, "ascending") for c in _TIE_BREAK if c in names and c != time_column]
        order = pc.sort_indices(table, sort_keys=[(time_column, "ascending"), *ties])
        table = table.take(order)
    reserved = {label, time_column}
    dropped_ids: list[str] = []
    if config.features:
        features = list(config.features)
    else:
        features = keys or [c for c in names if c not in reserved and c not in config.drop]
        dropped_ids = tables.id_columns(table, features)
        features = [c for c in features if c not in dropped_ids]
    if not features:
        raise EvalError(f"expected at least one feature column besides the label in {config.data}")
    clash = [c for c in features if c in reserved]
    if clash:
        raise EvalError(f"feature columns must not include the label or time column, got {clash}")
    labels = tables.binary_labels(table, label, config.positive)
    block = _block_column(config, table, features, expanded=bool(keys))
    derived: list[str] = []
    if block is not None:
        numeric = [c for c in features if c != block and _is_number(table.column(c).type)]
        table = tables.within_block(table, block, numeric)
        derived = table.column_names[-len(numeric) :] if numeric else []
        features = features + derived
    if config.definition is not None:
        spec = config.definition.spec
    else:
        spec = tables.infer_spec(table, features, config.hash_bits, config.numeric_transform)
    return Prepared(
        table.select(features),
        labels.y,
        spec,
        label,
        time_column,
        labels.positive,
        tuple(dropped_ids),
        block,
        tuple(derived),
    )


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _block_column(
    config: EvalConfig, table: pa.Table, features: list[str], expanded: bool
) -> str | None:
    """The block column: the one named, or (``auto``) the first feature column whose rows
    come in blocks, for a plain table with inferred features (training examples and
    model definitions are evaluated on the features the trainer sees)."""
    if config.block_column == NONE or config.definition is not None:
        return None
    if config.block_column != AUTO:
        return config.block_column
    if expanded or config.features:
        return None
    found = tables.block_columns(table, features)
    return found[0] if found else None


def run(
    prepared: Prepared,
    learner: Learner,
    batch_size: int,
    window: int = 10_000,
    report_every: int = 50_000,
    progress: Progress | None = None,
) -> tuple[ProgressiveMetrics, float]:
    """Stream ``prepared`` through ``learner`` (predict, then learn, batch by batch).

    Returns the progressive metrics and the seconds spent featurising and learning.
    """
    if batch_size < 1:
        raise EvalError(f"batch size must be >= 1, got {batch_size}")
    metrics = ProgressiveMetrics(window=window)
    y, table = prepared.y, prepared.table
    total = table.num_rows
    busy = 0.0
    next_report = report_every
    featuriser = learner.featuriser
    step = max(_SLICE_ROWS // batch_size, 1) * batch_size
    for lo in range(0, total, step):
        t0 = time.perf_counter()
        part = table.slice(lo, step)
        idx, val = featuriser.transform_columns(
            part.num_rows, *tables.feature_columns(part, featuriser.spec)
        )
        busy += time.perf_counter() - t0
        for s in range(0, part.num_rows, batch_size):
            t0 = time.perf_counter()
            p = learner.predict_learn_featurised(
                idx[s : s + batch_size], val[s : s + batch_size], y[lo + s : lo + s + batch_size]
            )
            busy += time.perf_counter() - t0
            stop = min(lo + s + batch_size, total)
            metrics.update(y[lo + s : stop], p)
            if progress is not None and (stop >= next_report or stop == total):
                next_report = stop + report_every
                progress(
                    stop, total, {**metrics.report(), "examples_per_s": stop / max(busy, 1e-9)}
                )
    return metrics, busy


def _summary(
    config: EvalConfig,
    prepared: Prepared,
    model: str,
    params: dict[str, Any],
    metrics: ProgressiveMetrics,
    busy: float,
) -> dict[str, Any]:
    y = prepared.y
    total = y.shape[0]
    rate = float(y.mean()) if total else None
    constant = None
    if rate is not None and 0.0 < rate < 1.0:
        constant = -(rate * np.log(rate) + (1.0 - rate) * np.log(1.0 - rate))
    return {
        **metrics.report(),
        "examples": total,
        "positive_rate": rate,
        "constant_logloss": None if constant is None else float(constant),
        "examples_per_s": total / busy if busy > 0 else None,
        "seconds": busy,
        "model": model,
        "definition": None if config.definition is None else config.definition.name,
        "params": dict(params),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "feature_spec": prepared.spec.to_dict(),
        "data": str(config.data),
        "label": prepared.label,
        "positive_label": prepared.positive,
        "dropped_id_columns": list(prepared.dropped_ids),
        "block_column": prepared.block_column,
        "block_features": len(prepared.block_features),
        "time_column": prepared.time_column,
    }


def progressive_validation(config: EvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prequential evaluation of ``config.model``; the summary (``examples``, ``auc``, …)."""
    if config.batch_size < 1:
        raise EvalError(f"batch size must be >= 1, got {config.batch_size}")
    prepared = prepare(config)
    learner = config.learner(prepared.spec)
    metrics, busy = run(
        prepared, learner, config.batch_size, config.window, config.report_every, progress
    )
    return _summary(config, prepared, config.model, config.params, metrics, busy)


def compare_learners(
    config: EvalConfig,
    models: Sequence[str] = COMPARED_LEARNERS,
    progress: Callable[[str, int, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every learner in ``models`` at its defaults on the same stream; the best by AUC.

    Returns ``{"learners": {name: summary}, "best": name, …}``; ``config.params`` go to
    each learner that accepts them (none by default).
    """
    if config.batch_size < 1:
        raise EvalError(f"batch size must be >= 1, got {config.batch_size}")
    prepared = prepare(config)
    results: dict[str, dict[str, Any]] = {}
    for model in models:
        learner = config.learner(prepared.spec, model)
        on_progress: Progress | None = None
        if progress is not None:

            def on_progress(done: int, total: int, report: dict[str, Any], m: str = model) -> None:
                progress(m, done, total, report)

        metrics, busy = run(
            prepared, learner, config.batch_size, config.window, config.report_every, on_progress
        )
        results[model] = _summary(config, prepared, model, config.params, metrics, busy)
    scored = [m for m in results if results[m]["auc"] is not None]
    best = max(scored, key=lambda m: results[m]["auc"]) if scored else None
    first = next(iter(results.values()))
    keep = ("examples", "positive_rate", "constant_logloss", "feature_spec", "data", "label")
    return {
        "learners": results,
        "best": best,
        **{k: first[k] for k in keep},
        "positive_label": prepared.positive,
        "dropped_id_columns": list(prepared.dropped_ids),
        "block_column": prepared.block_column,
        "block_features": len(prepared.block_features),
        "time_column": prepared.time_column,
        "batch_size": config.batch_size,
    }
