"""The online trainer: progressive validation, learning, snapshots that carry offsets.

Each training example is scored by the current model before it is learned (predict
before learn), feeding live AUC / log loss / normalized entropy per model version.
Examples are learned in fixed-size micro-batches in arrival order; every
``snapshot_interval_s`` the learner is snapshotted (ONNX + learner state + metadata with
the input offsets it has learned up to) and published atomically to the registry, then
announced on the model-updates topic.

Guarantee: exactly-once model updates. A restarted trainer loads the newest snapshot and
resumes each partition from the snapshot's offsets, so every example is learned exactly
once by the model lineage, without Kafka transactions. The snapshot also records
``examples_seen`` and an order-independent fingerprint of the learned
(topic, partition, offset) set, which tests compare against an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash
from confluent_kafka import OFFSET_BEGINNING
from prometheus_client import Counter, Gauge

from models.features import FeatureSpec
from models.heads import create_for
from models.metrics import ProgressiveMetrics
from models.protocol import Learner
from models.registry import FileRegistry
from models.zoo import DEFAULT_BATCH_SIZE, DEFAULT_LEARNER
from streams.contracts import ModelUpdate, TrainingExample, decode, encode
from streams.processor import Decoder, Output, Record, TopicPartitionKey
from streams.topics import Topics

log = logging.getLogger(__name__)

EXAMPLES_TRAINED = Counter(
    "streamlearn_examples_trained_total", "Examples learned by the online trainer.", ["model"]
)
MODEL_VERSION = Gauge(
    "streamlearn_trainer_model_version", "Newest model version the trainer published.", ["model"]
)
PROGRESSIVE = Gauge(
    "streamlearn_progressive_metric",
    "Progressive validation metrics (predict before learn), overall and over a window.",
    ["model", "metric"],
)
SNAPSHOT_SECONDS = Gauge(
    "streamlearn_snapshot_seconds", "Time to snapshot and publish the last version.", ["model"]
)
_MASK = (1 << 64) - 1


def example_fingerprint(topic: str, partition: int, offset: int) -> int:
    """Stable 64-bit id of one example's coordinates (summed mod 2**64 per snapshot)."""
    return xxhash.xxh3_64_intdigest(f"{topic}/{partition}/{offset}".encode())


@dataclass(frozen=True)
class TrainerConfig:
    """What to train and how often to publish."""

    model: str = "feed"
    learner: str = DEFAULT_LEARNER
    params: Mapping[str, Any] = field(default_factory=dict)
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    flush_after_s: float = 1.0
    snapshot_interval_s: float = 10.0
    metrics_window: int = 5000


def _decode_example(raw: bytes | None) -> TrainingExample:
    return decode(TrainingExample, raw, max_bytes=1024 * 1024)


class OnlineTrainer:
    """A batch processor over ``training-examples.<model>`` (see module docstring)."""

    name = "trainer"
    dead_letter_inputs: frozenset[str] | None = None

    def __init__(
        self,
        topics: Topics,
        registry: FileRegistry,
        config: TrainerConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics
        self.registry = registry
        self.config = config
        self._clock = clock
        self.learner: Learner | None = None
        self.metrics = ProgressiveMetrics(window=config.metrics_window)
        self.version = 0
        self.offsets: dict[str, int] = {}  # "topic/partition" -> next offset learned up to
        self.fingerprint = 0
        self.examples_seen = 0
        self._pending: list[Record] = []
        self._last_batch: list[Record] = []
        self._last_arrival = 0.0
        self._last_snapshot = 0.0
        self._learned_since_snapshot = 0
        self._loaded = False

    # -- lifecycle -------------------------------------------------------------------------
    def inputs(self) -> Mapping[str, Decoder]:
        return {self.topics.training_examples(self.config.model): _decode_example}

    def _load(self) -> None:
        """Resume from the newest snapshot, or start a fresh learner."""
        self._loaded = True
        mv = self.registry.latest(self.config.model)
        if mv is None:
            self.learner = create_for(
                self.config.model,
                self.config.learner,
                self.config.spec,
                seed=self.config.seed,
                **self.config.params,
            )
            return
        self.learner = self.registry.load_learner(mv)
        meta = mv.metadata
        self.version = mv.version
        self.offsets = {k: int(v) for k, v in meta.get("offsets", {}).items()}
        self.fingerprint = int(meta.get("fingerprint", 0))
        self.examples_seen = int(meta.get("examples_seen", 0))
        self._last_snapshot = self._clock()  # the next snapshot is an interval away
        MODEL_VERSION.labels(self.config.model).set(self.version)
        log.info(
            "model=%s resumed from version=%d examples_seen=%d offsets=%s",
            self.config.model,
            self.version,
            self.examples_seen,
            self.offsets,
        )

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        if not self._loaded:
            self._load()
        # The snapshot is the truth: a partition it has not learned from starts at the
        # beginning, whatever the group's committed offset says.
        return {(t, p): self.offsets.get(f"{t}/{p}", OFFSET_BEGINNING) for t, p in partitions}

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        gone = set(partitions)
        self._pending = [r for r in self._pending if (r.topic, r.partition) not in gone]

    # -- learning --------------------------------------------------------------------------
    def process(self, records: list[Record]) -> list[Output]:
        if not self._loaded:
            self._load()
        self._last_batch = records
        self._pending.extend(records)
        self._last_arrival = self._clock()
        bs = self.config.batch_size
        while len(self._pending) >= bs:
            chunk, self._pending = self._pending[:bs], self._pending[bs:]
            self._learn(chunk)
        return []

    def _learn(self, chunk: list[Record]) -> None:
        assert self.learner is not None
        examples: list[TrainingExample] = [r.value for r in chunk]
        idx, val = self.learner.featuriser.transform_many([e.features for e in examples])
        y = np.fromiter((e.label for e in examples), dtype=np.float64, count=len(examples))
        p = self.learner.predict_learn_encoded(idx, val, y)
        self.metrics.update(y, p)
        fp = self.fingerprint
        for r in chunk:
            key = f"{r.topic}/{r.partition}"
            if r.offset + 1 > self.offsets.get(key, 0):
                self.offsets[key] = r.offset + 1
            fp = (fp + example_fingerprint(r.topic, r.partition, r.offset)) & _MASK
        self.fingerprint = fp
        self.examples_seen += len(chunk)
        self._learned_since_snapshot += len(chunk)
        EXAMPLES_TRAINED.labels(self.config.model).inc(len(chunk))

    def tick(self, now: float) -> list[Output]:
        if not self._loaded:
            self._load()
        if self._pending and now - self._last_arrival >= self.config.flush_after_s:
            chunk, self._pending = self._pending, []
            self._learn(chunk)
        due = now - self._last_snapshot >= self.config.snapshot_interval_s
        if self.version == 0 or (due and self._learned_since_snapshot > 0):
            return [self.publish()]
        return []

    def publish(self) -> Output:
        """Snapshot the learner to the registry and return the announcement record."""
        assert self.learner is not None
        t0 = time.perf_counter()
        report = self.metrics.report()
        snap = self.learner.snapshot()
        mv = self.registry.publish(
            self.config.model,
            snap,
            extra={
                "offsets": dict(self.offsets),
                "fingerprint": str(self.fingerprint),
                "examples_seen": self.examples_seen,
                "metrics": report,
                "parent_version": self.version or None,
            },
        )
        self.version = mv.version
        self._last_snapshot = self._clock()
        self._learned_since_snapshot = 0
        SNAPSHOT_SECONDS.labels(self.config.model).set(time.perf_counter() - t0)
        MODEL_VERSION.labels(self.config.model).set(mv.version)
        for k, v in report.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                PROGRESSIVE.labels(self.config.model, k).set(v)
        log.info(
            "model=%s published version=%d examples_seen=%d auc=%s",
            self.config.model,
            mv.version,
            self.examples_seen,
            report.get("auc"),
        )
        upd = ModelUpdate(
            model=self.config.model,
            version=mv.version,
            created_at=float(mv.metadata.get("created_at", time.time())),
            metrics={k: v for k, v in report.items() if v is not None},
        )
        return Output(self.topics.model_updates, encode(upd), self.config.model)

    # -- checkpoints: the snapshot is the checkpoint ----------------------------------------
    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        return []

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        return None

    def finish(self) -> list[Output]:
        """Learn what is pending and publish a last snapshot, so a clean stop loses nothing."""
        if self._pending:
            chunk, self._pending = self._pending, []
            self._learn(chunk)
        return [self.publish()] if self._learned_since_snapshot else []

    def discard(self) -> None:
        failed = {id(r) for r in self._last_batch}
        self._pending = [r for r in self._pending if id(r) not in failed]

    def close(self) -> None:
        return None
