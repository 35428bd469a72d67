"""Batch (re)training of an online learner on a replayed dataset, with lineage.

Input: a dataset of training examples — rows with ``label`` and ``features`` (the
``streamlearn.streams.contracts.TrainingExample`` shape, ``features`` as JSON or a map), or a flat
table whose columns other than the label, the time column and the replay's source
columns are the features. Rows are put in time order (``ts``, else the Kafka
``timestamp``, else file order; ties keep file order), the last ``holdout`` fraction is
held out, and the learner sees the rest for ``epochs`` ordered passes (optionally
shuffled with ``seed``). Everything is a function of (data, config), so the same data
and seed give a byte-identical ONNX graph. A declared model is trained from its
definition (``TrainConfig.definition``: head, learner, params, feature spec). Before it is
published, the ONNX graph is checked against the learner on holdout rows
(:func:`streamlearn.models.parity.onnx_parity`): a graph that differs is never published.

The dataset is held in memory as featurised arrays (``n × K`` int64 + float32).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from streamlearn.models import zoo
from streamlearn.models.definition import ModelDef
from streamlearn.models.features import FeatureSpec
from streamlearn.models.metrics import ProgressiveMetrics
from streamlearn.models.parity import PARITY_ROWS, onnx_parity
from streamlearn.models.protocol import Learner
from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.stages import publish_candidate
from streamlearn.offline.errors import DatasetError
from streamlearn.offline.lineage import code_version, dataset_identity
from streamlearn.offline.prequential import DEFAULT_NUMERIC_TRANSFORM
from streamlearn.offline.records import SOURCE_COLUMNS
from streamlearn.offline.tables import infer_spec as infer_table_spec
from streamlearn.offline.tables import read_table, rows_table

log = logging.getLogger(__name__)

Row = dict[str, Any]
_ENCODE_CHUNK = 65_536
#: Holdout rows (else training rows) the ONNX graph is checked on before publishing.


@dataclass(frozen=True)
class TrainConfig:
    """How to train: learner, hyper-parameters, seed, passes, holdout."""

    learner: str = "ftrl"
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 1
    batch_size: int = 256
    holdout: float = 0.2
    shuffle: bool = False
    label: str = "label"
    time_column: str | None = None
    spec: FeatureSpec | None = None
    hash_bits: int = 20
    #: The model's definition (head, learner, params, spec): ``learner``/``params``
    #: override its learner's, ``spec`` its spec. ``None``: a learner over ``spec`` or the
    #: spec inferred from the rows.
    definition: ModelDef | None = None
    #: With a definition: infer the spec from the rows instead of using the definition's.
    infer_spec: bool = False

    def lineage(self) -> dict[str, Any]:
        """The config as JSON-safe lineage."""
        return {
            "definition": None if self.definition is None else self.definition.name,
            "learner": self.learner,
            "params": dict(self.params),
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "holdout": self.holdout,
            "shuffle": self.shuffle,
            "label": self.label,
            "time_column": self.time_column,
        }


@dataclass
class Examples:
    """Rows, labels and times in time order."""

    rows: list[Row]
    y: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, sl: slice) -> Examples:
        """The examples in ``sl`` (a view on the same rows)."""
        return Examples(self.rows[sl], self.y[sl], self.times[sl])


def _time_column(table: pa.Table, wanted: str | None) -> str | None:
    if wanted is not None:
        if wanted not in table.column_names:
            raise DatasetError(f"expected time column {wanted!r}, columns are {table.column_names}")
        return wanted
    return next((c for c in ("ts", "timestamp") if c in table.column_names), None)


def _times(table: pa.Table, col: str | None) -> np.ndarray:
    if col is None:
        return np.arange(table.num_rows, dtype=np.float64)
    arr = table.column(col)
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    return np.nan_to_num(arr.to_numpy(zero_copy_only=False).astype(np.float64), nan=-np.inf)


def _feature_rows(table: pa.Table, label: str, time_col: str | None) -> list[Row]:
    if "features" in table.column_names:
        out: list[Row] = []
        for f in table.column("features").to_pylist():
            if isinstance(f, str):
                f = orjson.loads(f)
            elif isinstance(f, list):  # a map column reads as [(key, value), …]
                f = dict(f)
            out.append(f or {})
        return out
    drop = {label, time_col, *SOURCE_COLUMNS}
    return table.select([c for c in table.column_names if c not in drop]).to_pylist()


def load_examples(path: Path, label: str = "label", time_column: str | None = None) -> Examples:
    """Read a dataset of training examples and put it in time order (see the module doc)."""
    table = read_table(path)
    if label not in table.column_names:
        raise DatasetError(f"expected a label column {label!r} in {path}, got {table.column_names}")
    col = _time_column(table, time_column)
    y = table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)
    if y.size and not np.all((y == 0) | (y == 1)):
        raise DatasetError(
            f"expected labels 0/1 in column {label!r}, got {np.unique(y)[:5].tolist()}"
        )
    times = _times(table, col)
    rows = _feature_rows(table, label, col)
    order = np.argsort(times, kind="stable")
    return Examples([rows[i] for i in order], y[order], times[order])


def infer_spec(rows: Sequence[Row], hash_bits: int = 20) -> FeatureSpec:
    """The spec ``eval`` infers for these rows (:func:`streamlearn.offline.tables.infer_spec` over
    :func:`streamlearn.offline.tables.rows_table`): numeric when all values are numbers, else
    categorical; fields that never hold a value are left out."""
    table = rows_table(rows)
    return infer_table_spec(table, table.column_names, hash_bits, DEFAULT_NUMERIC_TRANSFORM)


def split_holdout(ex: Examples, fraction: float) -> tuple[Examples, Examples]:
    """(train, holdout): the holdout is the last ``fraction`` of the examples in time."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"holdout must be in [0, 1), got {fraction}")
    cut = len(ex) - math.floor(len(ex) * fraction)
    return ex.take(slice(0, cut)), ex.take(slice(cut, None))


def featurise(learner: Learner, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Featurise rows in chunks: ``(idx int64 [n, K], val float32 [n, K])``."""
    k = learner.featuriser.spec.n_slots
    if not rows:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    parts = [
        learner.featuriser.transform_many(rows[i : i + _ENCODE_CHUNK])
        for i in range(0, len(rows), _ENCODE_CHUNK)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fit(
    learner: Learner,
    train: Examples,
    config: TrainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """``config.epochs`` passes over ``train`` in time order (or shuffled with the seed)."""
    idx, val = featurise(learner, train.rows)
    n, bs = len(train), config.batch_size
    steps = math.ceil(n / bs) * config.epochs
    rng = np.random.default_rng(config.seed)
    done = 0
    for _ in range(config.epochs):
        order = rng.permutation(n) if config.shuffle else np.arange(n)
        for start in range(0, n, bs):
            sel = order[start : start + bs]
            learner.learn_featurised(idx[sel], val[sel], train.y[sel])
            done += 1
            if progress is not None and (done % 50 == 0 or done == steps):
                progress(done, steps)


def holdout_metrics(learner: Learner, test: Examples) -> dict[str, Any]:
    """Holdout metrics: count, base rate, AUC, log loss, NE, accuracy, calibration."""
    n = len(test)
    if n == 0:
        return {"count": 0}
    idx, val = featurise(learner, test.rows)
    p = np.asarray(learner.predict_featurised(idx, val), dtype=np.float64)
    y = test.y
    metrics = ProgressiveMetrics(window=n)  # the window holds the whole holdout: exact AUC
    metrics.update(y, p)
    return {
        "count": n,
        "base_rate": float(y.mean()),
        "auc": metrics.window_auc,
        "logloss": metrics.logloss,
        "ne": metrics.ne,
        "accuracy": float(((p >= 0.5) == (y > 0.5)).mean()),
        "calibration": metrics.calibration,
    }


@dataclass(frozen=True)
class TrainResult:
    """What a batch training produced."""

    version: ModelVersion | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    onnx: bytes
    seconds: float


def make_learner(config: TrainConfig, rows: Sequence[Row]) -> Learner:
    """The configured learner: the model definition's (with the config's learner,
    params and spec over it), else the learner over the configured or inferred spec."""
    if config.definition is not None:
        d = config.definition.with_learner(config.learner, config.params)
        spec = config.spec or (infer_spec(rows, config.hash_bits) if config.infer_spec else None)
        return (d.with_spec(spec) if spec else d).create(seed=config.seed)
    spec = config.spec or infer_spec(rows, config.hash_bits)
    return zoo.create(config.learner, spec, seed=config.seed, **dict(config.params))


def checked_snapshot(learner: Learner, rows: Sequence[Row]) -> tuple[Snapshot, float]:
    """The learner's snapshot, its ONNX graph checked against it on up to
    :data:`PARITY_ROWS` of ``rows`` (:class:`~streamlearn.models.parity.ParityError` when it
    differs)."""
    snap = learner.snapshot()
    idx, val = featurise(learner, rows[:PARITY_ROWS])
    return snap, onnx_parity(snap, learner, idx, val)


def train(
    dataset: Path,
    config: TrainConfig,
    registry: FileRegistry | None = None,
    model: str = "model",
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train on ``dataset``, evaluate on the time holdout, publish to ``registry`` if given."""
    started = time.monotonic()
    examples = load_examples(dataset, config.label, config.time_column)
    if len(examples) == 0:
        raise DatasetError(f"expected training examples in {dataset}, found none")
    train_ex, test_ex = split_holdout(examples, config.holdout)
    learner = make_learner(config, train_ex.rows)
    fit(learner, train_ex, config, progress)
    metrics = holdout_metrics(learner, test_ex)
    snap, parity = checked_snapshot(learner, test_ex.rows or train_ex.rows)
    metrics["parity_max_abs_diff"] = parity
    lineage = {
        "dataset": dataset_identity(dataset),
        "code": code_version(),
        "train": config.lineage(),
        "train_rows": len(train_ex),
        "holdout_rows": len(test_ex),
        "trainer": "streamlearn.offline.train",
    }
    version = None
    if registry is not None:
        version = publish_candidate(registry, model, snap, {"lineage": lineage, "metrics": metrics})
        log.info(
            "published model=%s version=%d holdout auc=%s",
            model,
            version.version,
            metrics.get("auc"),
        )
    return TrainResult(version, metrics, lineage, snap.onnx, time.monotonic() - started)
