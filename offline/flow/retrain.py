"""The built-in ``retrain`` flow: replay → train → evaluate → export → publish.

It strings together the offline functions (``streamlearn.offline.replay``,
``streamlearn.offline.train``) as cached steps. Params (``--param name=value``):

==============  ==========================================================================
``project``     the project directory (default: the built-in example)
``model``       a model the project declares (default: its only one); also picks the
                default topic ``<prefix>training-examples.<model>``
``dataset``     an existing dataset (directory or Parquet file) instead of a replay
``topic``       topic(s) to replay (full names); default: the model's training examples
``start/end``   replay bounds, the syntax of ``streamlearn replay --from/--to``
``format``      replay record format (``auto``, ``training``, ``event``, ``json``)
``learner``     a ``streamlearn.models.zoo`` learner name (``ftrl``, ``fm``, ``deep``, ``river-lr``)
``epochs`` …    ``batch_size``, ``shuffle``, ``seed``, ``holdout``, ``label``,
                ``time_column``, ``hash_bits``: as ``streamlearn offline train``
``spec``        ``model`` (default): the model is trained from its definition in the
                project (head, params, feature spec); ``infer``: the spec is inferred
                from the rows (head and params still the definition's)
anything else   a hyper-parameter of the learner (``alpha=0.1`` for ftrl, ``lr`` for fm);
                ``LEARNER.name`` applies to that learner only (``ftrl.alpha=0.1``), so a
                sweep over ``learner=ftrl,fm`` can vary each one's own parameters
==============  ==========================================================================

The replay step's fingerprint is the source's current state: the dataset's checksum, or
where the topic range ends now (an end offset capped by the partition's end, else the
partition's end), so records produced into an open range (``end=latest``) invalidate the
cache while a range closed by offsets stays cached as the topic grows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import TopicPartition

from streamlearn.models import zoo
from streamlearn.models.definition import ModelDef
from streamlearn.models.errors import ParityError, StreamlearnError
from streamlearn.models.parity import onnx_parity
from streamlearn.models.protocol import Learner
from streamlearn.models.registry import FileRegistry
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.stages import publish_candidate
from streamlearn.offline.dataset import read_manifest
from streamlearn.offline.errors import DatasetError, FlowError, RangeError
from streamlearn.offline.flow.context import StepContext, get_resource
from streamlearn.offline.flow.graph import Flow
from streamlearn.offline.lineage import code_version, dataset_identity
from streamlearn.offline.ranges import EARLIEST, LATEST, Bounds, parse_bounds
from streamlearn.offline.replay import ReplayProgress, ReplaySpec
from streamlearn.offline.replay import replay as replay_topics
from streamlearn.offline.train import (
    PARITY_ROWS,
    TrainConfig,
    featurise,
    fit,
    holdout_metrics,
    load_examples,
    make_learner,
    split_holdout,
)
from streamlearn.project import load_project
from streamlearn.streams.errors import KafkaError
from streamlearn.streams.kafka.clients import KafkaCluster, make_consumer
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics


def scope_learner_params(params: dict[str, Any]) -> dict[str, Any]:
    """Keep ``LEARNER.name`` params of the chosen learner as ``name``; drop the others'."""
    learner = params.get("learner")
    out: dict[str, Any] = {}
    scoped: dict[str, Any] = {}
    for key, value in params.items():
        scope, dot, name = key.partition(".")
        if not dot:
            out[key] = value
        elif scope not in zoo.available():
            raise FlowError(
                f"expected LEARNER.param with a learner among {zoo.available()}, got {key!r}"
            )
        elif scope == learner:
            scoped[name] = value
    return {**out, **scoped}


def _metrics(outputs: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if "evaluate" in outputs:
        m = outputs["evaluate"]
        row.update({k: m.get(k) for k in ("auc", "logloss", "ne", "accuracy", "count")})
    if "train" in outputs:
        row.update(
            examples_per_s=outputs["train"].examples_per_s,
            train_seconds=outputs["train"].seconds,
        )
    if "publish" in outputs:
        row["version"] = outputs["publish"]["version"]
    return row


retrain = Flow(
    "retrain",
    params={
        "project": None,
        "model": None,
        "dataset": None,
        "topic": None,
        "start": "earliest",
        "end": "latest",
        "format": "auto",
        "learner": "ftrl",
        "epochs": 1,
        "batch_size": 256,
        "shuffle": False,
        "seed": 0,
        "holdout": 0.2,
        "label": "label",
        "time_column": None,
        "hash_bits": 20,
        "spec": "model",
    },
    description="Replay a topic range (or take a dataset), batch-train a learner, evaluate "
    "on the time holdout, export ONNX and publish it with the flow's lineage.",
    prepare=scope_learner_params,
    metrics=_metrics,
    headline=("auc", "examples_per_s"),
)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset on disk and its identity."""

    path: str
    checksum: str
    records: int | None


@dataclass(frozen=True)
class Trained:
    """A trained learner, its config lineage, and a featurised holdout sample for parity."""

    learner: Learner
    config: dict[str, Any]
    train_rows: int
    holdout_rows: int
    seconds: float
    examples_per_s: float
    sample_idx: np.ndarray
    sample_val: np.ndarray


@dataclass(frozen=True)
class Exported:
    """The snapshot to publish and where its ONNX graph was written."""

    snapshot: Snapshot
    onnx_path: str
    onnx_bytes: int
    parity_max_abs_diff: float


def _as_list(value: Any) -> list[str]:
    """A param that may be one value or a list, as strings (``end=100`` parses as a number)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _definition(project: str | None, model: str | None) -> ModelDef | None:
    """The definition of ``model`` in ``project`` (the built-in example when ``None``; the
    project's only model when ``model`` is ``None``); ``None`` for a model the project does
    not declare (trained with a spec inferred from its rows)."""
    try:
        catalog = load_project(project).model_catalog
        if model is not None and model not in catalog:
            return None
        return catalog.only(model)
    except StreamlearnError as exc:
        raise FlowError(f"expected a model of the project: {exc}") from None


def _model_name(project: str | None, model: str | None) -> str:
    if model is not None:
        return model
    definition = _definition(project, None)
    assert definition is not None
    return definition.name


def _topics(
    resources: Mapping[str, Any], topic: str | list[str] | None, model: str
) -> tuple[KafkaConfig, list[str]]:
    why = "to replay a topic (pass --bootstrap-servers, or --param dataset=PATH)"
    kafka = get_resource(resources, "kafka", KafkaConfig, why)
    return kafka, _as_list(topic) or [Topics(kafka.topic_prefix).training_examples(model)]


def _end_offsets(kafka: KafkaConfig, topics: list[str], end: Bounds) -> dict[str, list[int]]:
    """Where the range ends now, per topic and partition: an end offset bound, capped by
    the partition's end offset, or that end offset (``latest`` and timestamp bounds).

    The end is never taken from ListOffsets alone (wrong on the embedded broker): below
    an offset bound it is a lower bound, enough to keep that bound; else the true end
    comes from a fetch (:meth:`streamlearn.streams.kafka.clients.KafkaCluster.log_ends`)."""
    consumer = make_consumer(kafka, f"streamlearn-flow-{uuid.uuid4().hex[:12]}")
    try:
        kept: dict[tuple[str, int], int] = {}
        fetch: list[tuple[str, int]] = []
        for t in topics:
            md = consumer.list_topics(t, timeout=10.0).topics.get(t)
            if md is None or md.error is not None or not md.partitions:
                why = "unknown topic" if md is None or md.error is None else md.error
                raise RangeError(f"expected topic={t} to exist with partitions, got: {why}")
            for p in sorted(md.partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10.0)
                bound = end.for_partition(p)
                if bound.kind == "offset" and bound.value <= high:
                    kept[(t, p)] = bound.value
                else:
                    fetch.append((t, p))
    finally:
        consumer.close()
    try:
        true_ends = KafkaCluster(kafka).log_ends(fetch)
    except KafkaError as exc:
        raise RangeError(f"cannot find where topics {topics} end: {exc}") from None
    for (t, p), true_end in true_ends.items():
        bound = end.for_partition(p)
        kept[(t, p)] = min(bound.value, true_end) if bound.kind == "offset" else true_end
    return {t: [kept[(t, p)] for p in sorted(q for s, q in kept if s == t)] for t in topics}


def source_state(
    resources: Mapping[str, Any],
    dataset: str | None,
    topic: str | list[str] | None,
    end: str | list[str],
    project: str | None,
    model: str | None,
) -> Any:
    """The replay step's fingerprint: the dataset's checksum, or the broker and where the
    range ends now (so records produced into an open range invalidate the cache)."""
    if dataset:
        return dataset_identity(Path(dataset))["checksum"]
    kafka, topics = _topics(resources, topic, _model_name(project, model))
    ends = _end_offsets(kafka, topics, parse_bounds(_as_list(end), LATEST))
    return {"bootstrap": kafka.bootstrap_servers, "ends": ends}


@retrain.step(fingerprint=source_state)
def replay(
    ctx: StepContext,
    dataset: str | None,
    topic: str | list[str] | None,
    start: str | list[str],
    end: str | list[str],
    format: str,
    project: str | None,
    model: str | None,
) -> DatasetRef:
    """Replay the topic range into Parquet (or take the given dataset as it is)."""
    if dataset:
        ident = dataset_identity(Path(dataset))
        return DatasetRef(ident["path"], ident["checksum"], ident.get("records"))
    kafka, topics = _topics(ctx.resources, topic, _model_name(project, model))
    spec = ReplaySpec(
        tuple(topics),
        start=parse_bounds(_as_list(start), EARLIEST),
        end=parse_bounds(_as_list(end), LATEST),
        format=format,
    )

    def on_progress(p: ReplayProgress) -> None:
        ctx.progress(p.records, None, f"{p.topic}[{p.partition}]")

    out = ctx.out / "dataset"
    manifest = replay_topics(kafka, spec, out, progress=on_progress)
    return DatasetRef(str(out), read_manifest(out)["checksum"], manifest["records"])


@retrain.step(inputs=["replay"], cpus=1)
def train(
    ctx: StepContext,
    replay: DatasetRef,
    learner: str,
    epochs: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    holdout: float,
    label: str,
    time_column: str | None,
    hash_bits: int,
    project: str | None,
    model: str | None,
    spec: str,
    **learner_params: Any,
) -> Trained:
    """Batch-train the learner on the oldest rows (time order), holding out the newest."""
    if spec not in ("model", "infer"):
        raise FlowError(f"expected spec=model or spec=infer, got spec={spec!r}")
    config = TrainConfig(
        definition=_definition(project, model),
        infer_spec=spec == "infer",
        learner=learner,
        params=learner_params,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        holdout=holdout,
        shuffle=shuffle,
        label=label,
        time_column=time_column,
        hash_bits=hash_bits,
    )
    examples = load_examples(Path(replay.path), label, time_column)
    if len(examples) == 0:
        raise DatasetError(f"expected training examples in {replay.path}, found none")
    train_ex, test_ex = split_holdout(examples, holdout)
    trained = make_learner(config, train_ex.rows)
    started = time.monotonic()
    fit(trained, train_ex, config, lambda done, total: ctx.progress(done, total, "batches"))
    seconds = time.monotonic() - started
    idx, val = featurise(trained, test_ex.rows[:PARITY_ROWS] or train_ex.rows[:PARITY_ROWS])
    return Trained(
        learner=trained,
        config=config.lineage(),
        train_rows=len(train_ex),
        holdout_rows=len(test_ex),
        seconds=round(seconds, 4),
        examples_per_s=round(len(train_ex) * epochs / max(seconds, 1e-9), 1),
        sample_idx=idx,
        sample_val=val,
    )


@retrain.step(inputs=["replay", "train"])
def evaluate(
    replay: DatasetRef, train: Trained, holdout: float, label: str, time_column: str | None
) -> dict[str, Any]:
    """Holdout metrics (AUC, log loss, NE, accuracy, calibration) on the newest rows."""
    _, test_ex = split_holdout(load_examples(Path(replay.path), label, time_column), holdout)
    return holdout_metrics(train.learner, test_ex)


@retrain.step(inputs=["train"])
def export(ctx: StepContext, train: Trained) -> Exported:
    """Snapshot the learner to ONNX and check onnxruntime agrees with it on holdout rows."""
    snap = train.learner.snapshot()
    path = ctx.out / "model.onnx"
    path.write_bytes(snap.onnx)
    try:
        diff = onnx_parity(snap, train.learner, train.sample_idx, train.sample_val)
    except ParityError as exc:
        raise FlowError(str(exc)) from None
    return Exported(snap, str(path), len(snap.onnx), diff)


@retrain.step(inputs=["replay", "train", "evaluate", "export"])
def publish(
    ctx: StepContext,
    replay: DatasetRef,
    train: Trained,
    evaluate: dict[str, Any],
    export: Exported,
    project: str | None,
    model: str | None,
) -> dict[str, Any]:
    """Publish the snapshot to the registry, with the flow's lineage and the metrics."""
    registry = ctx.resource("registry", FileRegistry, "to publish to")
    lineage = {
        "dataset": {"path": replay.path, "checksum": replay.checksum, "records": replay.records},
        "code": code_version(),
        "train": train.config,
        "train_rows": train.train_rows,
        "holdout_rows": train.holdout_rows,
        "trainer": "streamlearn.offline.flow:retrain",
        "flow": ctx.lineage(),
    }
    name = _model_name(project, model)
    mv = publish_candidate(
        registry, name, export.snapshot, {"lineage": lineage, "metrics": evaluate}
    )
    return {"model": name, "version": mv.version, "path": str(mv.path)}
