"""The online trainer: progressive validation, learning, snapshots that carry offsets.

Each training example is scored by the current model before it is learned (predict
before learn), feeding live AUC / log loss / normalized entropy per model version.
Examples are learned in fixed-size micro-batches in arrival order; every
``snapshot_interval_s`` the learner is snapshotted (ONNX + learner state + metadata with
the input offsets it has passed) and published atomically to the registry, then
announced on the model-updates topic. In between, every ``publish_interval_s``, a
*serving-only* version (the ONNX graph and metadata, no learner state: cheap, and small
on disk) is published and announced the same way, so serving gets a fresh model about
every second while the full state is written less often. Before any publish the examples
still pending are learned, so a version holds everything read so far. Each version
records the positives it learned (``streamlearn.models.freshness``: for serving's freshness
figures).
With ``keep_versions`` the registry keeps only the newest versions (and the newest resume
points and staged ones, ``FileRegistry.prune``).

It is a snapshot processor (``streamlearn.streams.runtime.processor``): ``process`` featurises the
whole batch before learning anything, so a batch that raises leaves no trace (the runtime then
retries it record by record and dead-letters the culprit); a learner that fails half-way
through an update raises ``StateLost`` and the process stops, to resume from the last
snapshot.

Guarantee: exactly-once model updates. A snapshot records, per input partition, the
offset below which every example is learned or dead-lettered, with the ids of the topics
(``Cluster.topic_ids``); a restarted trainer loads the newest *online* version of its
model that has its state (serving-only versions are never resume points) and resumes each
partition from those offsets, so every example is learned exactly once by the model
lineage, without Kafka transactions. The snapshot also records
``examples_seen`` and order-independent fingerprints of the learned (topic, partition,
offset) set and of the learned example ids, which tests compare against an uninterrupted
run and against the topic.

Each example is also learned once by identity: an example whose (request, item) was
learned already (the joiner killed between producing and committing, or a frozen one
writing late, can put it into the topic twice) is dropped and counted
(``duplicates_dropped``), over a bounded window of ids stored with each full snapshot
(``streamlearn.streams.learning.dedup``).

A snapshot whose topic id differs from the topic's id now (the topic was recreated, or
this is another cluster), or whose offset lies beyond the partition's log end, is not
resumed: a new lineage starts from its learner (``parent_version`` is the old version)
with offsets for the new topics and counts from zero, and one warning says so. Versions
published offline (``origin`` ``offline``) are never a resume point.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any, Final

import numpy as np
import xxhash
from confluent_kafka import OFFSET_BEGINNING
from prometheus_client import Counter, Gauge

from streamlearn.models.definition import ModelDef
from streamlearn.models.errors import RegistryError
from streamlearn.models.freshness import METADATA_KEY as FRESHNESS_KEY
from streamlearn.models.freshness import PositivesSample
from streamlearn.models.metrics import ProgressiveMetrics
from streamlearn.models.parity import ParityError, onnx_parity, spec_rows
from streamlearn.models.protocol import Learner
from streamlearn.models.registry import FileRegistry, ModelVersion, Stage
from streamlearn.models.rollout import RolloutConfig
from streamlearn.models.sync import SyncState
from streamlearn.models.zoo import DEFAULT_BATCH_SIZE
from streamlearn.streams.contracts import ExampleDecoder, ModelUpdate, encode
from streamlearn.streams.errors import CatalogError, StateLost
from streamlearn.streams.kafka.clients import Cluster
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.dedup import DEFAULT_CAPACITY, SeenIds, example_ids
from streamlearn.streams.learning.examples import Column, Examples, optional_column
from streamlearn.streams.learning.ranks import RankGroup
from streamlearn.streams.learning.rollout import PARITY_FAILURES, Rollout, Switch
from streamlearn.streams.learning.rounds import RoundBuffer, scores
from streamlearn.streams.runtime.processor import (
    Decoder,
    Output,
    Record,
    RecordBatch,
    TopicPartitionKey,
)

log = logging.getLogger(__name__)

EXAMPLES_TRAINED = Counter(
    "streamlearn_examples_trained_total", "Examples learned by the online trainer.", ["model"]
)
EXAMPLES_SEEN = Gauge(
    "streamlearn_trainer_examples_seen",
    "Examples the online trainer's model has learned, its state (resumed from the last "
    "snapshot on a restart, so a kill loses none of it).",
    ["model"],
)
MODEL_VERSION = Gauge(
    "streamlearn_trainer_model_version", "Newest model version the trainer published.", ["model"]
)
PROGRESSIVE = Gauge(
    "streamlearn_progressive_metric",
    "Progressive validation metrics (predict before learn), overall and over a window.",
    ["model", "metric"],
)
DUPLICATES = Counter(
    "streamlearn_duplicate_examples_total",
    "Examples dropped by the online trainer because it had learned their (request, item).",
    ["model"],
)
SYNC_ROUNDS = Counter(
    "streamlearn_trainer_sync_rounds_total",
    "Sync rounds this trainer rank held with the model's other ranks.",
    ["model"],
)
SYNC_BYTES = Counter(
    "streamlearn_trainer_sync_bytes_total",
    "Bytes this trainer rank sent into the ranks' collectives (the model's sync and the "
    "reports to rank 0).",
    ["model"],
)
SNAPSHOT_SECONDS = Gauge(
    "streamlearn_snapshot_seconds", "Time to snapshot and publish the last version.", ["model"]
)
_MASK = (1 << 64) - 1
#: The dedup window's file in a full version (``FileRegistry.read_file``).
SEEN_FILE = "seen.npy"
_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (products wrap modulo 2**64)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _partition_seed(topic: str, partition: int) -> int:
    return xxhash.xxh3_64_intdigest(f"{topic}/{partition}".encode())


@lru_cache(maxsize=64)
def _partition_seeds(topic: str, partitions: int) -> np.ndarray:
    """The seeds of partitions ``0 … partitions - 1`` of ``topic``, indexed by partition."""
    seeds = np.array([_partition_seed(topic, p) for p in range(partitions)], dtype=np.uint64)
    seeds.flags.writeable = False  # shared by every caller
    return seeds


def example_fingerprint(topic: str, partition: int, offset: int) -> int:
    """Stable 64-bit id of one example's coordinates (summed mod 2**64 per snapshot):
    splitmix64 of the partition's xxh3 plus the offset."""
    x = np.array([(_partition_seed(topic, partition) + offset) & _MASK], dtype=np.uint64)
    return int(_mix(x)[0])


def fingerprint_sum(topic: str, partitions: np.ndarray, offsets: np.ndarray) -> int:
    """The sum mod 2**64 of :func:`example_fingerprint` over the examples at ``offsets``
    of ``partitions`` (arrays of one length), in one pass of numpy."""
    if not len(offsets):
        return 0
    seeds = _partition_seeds(topic, 1 << int(partitions.max()).bit_length())  # few sizes
    with np.errstate(over="ignore"):
        x = seeds[partitions] + offsets.astype(np.uint64)
        return int(_mix(x).sum(dtype=np.uint64))


@dataclass(frozen=True)
class TrainerConfig:
    """Which model to train (its definition: head, spec, learner, params) and how often
    to publish."""

    definition: ModelDef
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    flush_after_s: float = 1.0
    #: Seconds between full versions (with the learner state: resume points).
    snapshot_interval_s: float = 10.0
    #: Seconds between serving-only versions in between (``None``: full ones only).
    publish_interval_s: float | None = None
    #: Retention: keep the newest this many versions (and the newest resume points and
    #: the staged ones); 0 keeps every version.
    keep_versions: int = 0
    metrics_window: int = 5000
    #: Example ids remembered to drop duplicates (``streamlearn.streams.learning.dedup``).
    dedup_window: int = DEFAULT_CAPACITY
    #: thresholds of the automatic rollout (``streamlearn.streams.learning.rollout``)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    @property
    def model(self) -> str:
        """The model's name (its registry folder and ``training-examples.<model>``)."""
        return self.definition.name


#: ``origin`` of the versions the online trainer publishes (its resume points).
ONLINE: Final = "online"


def is_online(mv: ModelVersion) -> bool:
    """True for a version the online trainer published (older ones carry no ``origin``
    but a fingerprint)."""
    origin = mv.metadata.get("origin")
    return origin == ONLINE or (origin is None and "fingerprint" in mv.metadata)


def is_resume_point(mv: ModelVersion) -> bool:
    """True for an online version that carries its learner state."""
    return is_online(mv) and not mv.serving_only


#: The largest training example the trainer decodes (a bigger one is dead-lettered).
MAX_EXAMPLE_BYTES: Final = 1024 * 1024
_FEATURES = attrgetter("features")
_REQUEST_ID = attrgetter("request_id")
_ITEM_ID = attrgetter("item_id")
_LABEL = attrgetter("label")
_SERVED_VERSION = attrgetter("served_version")
_SERVED_SCORE = attrgetter("served_score")
_SHADOW_VERSION = attrgetter("shadow_version")
_SHADOW_SCORE = attrgetter("shadow_score")


def _numbers(values: Iterator[Any], n: int) -> np.ndarray | None:
    """The values as float64 in one pass, or ``None`` when one is not a number (absent,
    a string): the featuriser then converts them value by value."""
    try:
        return np.fromiter(values, dtype=np.float64, count=n)
    except (TypeError, ValueError, OverflowError):
        return None


class _Decoding:
    """The trainer's decoder of its topic: the ``ExampleDecoder`` of the features its
    learners read now (replaced when a candidate arm with another spec enters)."""

    def __init__(self, decoder: ExampleDecoder) -> None:
        self.decoder = decoder

    def __call__(self, raw: bytes | None) -> Any:
        return self.decoder(raw)

    def many(self, raws: Sequence[bytes | None]) -> list[Any]:
        return self.decoder.many(raws)


class OnlineTrainer:
    """A snapshot processor over ``training-examples.<model>`` (see module docstring)."""

    name = "trainer"
    dead_letter_inputs: frozenset[str] | None = None

    def __init__(
        self,
        topics: Topics,
        registry: FileRegistry,
        config: TrainerConfig,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
        ranks: RankGroup | None = None,
    ) -> None:
        self.topics = topics
        self.registry = registry
        self.config = config
        self._clock = clock
        self._cluster = cluster
        self.learner: Learner | None = None
        self.metrics = ProgressiveMetrics(window=config.metrics_window)
        self.version = 0
        #: "topic/partition" -> offset below which every example is learned or
        #: dead-lettered (examples still pending are above it; see ``_resume_offsets``)
        self.offsets: dict[str, int] = {}
        self.fingerprint = 0
        self.examples_seen = 0
        #: the ids of the examples learned (a window), their sum mod 2**64, and the
        #: examples dropped as already learned
        self.seen = SeenIds(config.dedup_window)
        self.ids_fingerprint = 0
        self.duplicates = 0
        self.lineage_id = uuid.uuid4().hex
        self.topic_ids: dict[str, str] = {}
        self._pending: list[Examples] = []
        #: examples of the first pending block before this position are learned
        self._head = 0
        self._pending_n = 0
        #: per-version evaluation, the candidate arm and the automatic rollout
        self.rollout = Rollout(registry, topics, config.model, config.rollout, clock=clock)
        self._decoding = _Decoding(ExampleDecoder(self._feature_names(), MAX_EXAMPLE_BYTES))
        self._last_arrival = 0.0
        self._last_snapshot = 0.0
        self._learned_since_snapshot = 0
        self._last_publish = 0.0
        self._learned_since_publish = 0
        self._resume_version: int | None = None
        #: records were processed since the last ``advance`` (``self.offsets`` lags them)
        self._unadvanced = False
        self._snapshot_offsets: dict[str, int] = {}
        self._loaded = False
        #: positives learned since the last published version (freshness, see
        #: ``streamlearn.models.freshness``)
        self._positives = PositivesSample(seed=config.seed)
        #: several ranks learning this model (``streamlearn.streams.learning.ranks``):
        #: what this rank learned since the last round, and the learner's state then
        self.ranks = ranks
        self._round = RoundBuffer()
        self._sync: SyncState | None = None
        self._next_round = 0.0
        self._rounds = 0
        self._bytes_counted = 0
        #: a round decided to stop (every rank stops; nothing more is learned or sent)
        self.stopped = False
        #: called when a round decides to stop (the runner stops its runtime)
        self.on_stop: Callable[[], None] | None = None
        #: the partitions assigned to this trainer (what a rank reports)
        self._own: set[str] = set()
        if ranks is not None:
            self.rollout.arms = False  # a candidate arm is not synced across ranks (yet)

    @property
    def input_topic(self) -> str:
        """The training-examples topic of the model."""
        return self.topics.training_examples(self.config.model)

    # -- lifecycle -------------------------------------------------------------------------
    def inputs(self) -> Mapping[str, Decoder]:
        return {self.input_topic: self._decoding}

    def _follow_arms(self) -> None:
        """Decode the features every learner reads (a candidate arm entered or left)."""
        names = self._feature_names()
        if self._decoding.decoder.names != names:
            self._decoding.decoder = ExampleDecoder(names, MAX_EXAMPLE_BYTES)

    def _feature_names(self) -> tuple[str, ...]:
        """The raw features the learners read: the model's spec's, and a candidate
        arm's when its spec differs."""
        specs = [self.config.definition.spec, *self.rollout.specs()]
        names: dict[str, None] = {}
        for spec in specs:
            names.update(dict.fromkeys((*spec.categorical, *spec.numeric)))
        return tuple(names)

    def _resume_point(self) -> ModelVersion | None:
        found = [mv for mv in self.registry.versions(self.config.model) if is_resume_point(mv)]
        return found[-1] if found else None

    def _new_learner(self) -> Learner:
        return self.config.definition.create(seed=self.config.seed)

    def _stale(self, meta: Mapping[str, Any]) -> str | None:
        """Why a snapshot cannot be resumed on the topics as they are now, or ``None``."""
        if self._cluster is None:
            return None
        topic = self.input_topic
        was = (meta.get("topic_ids") or {}).get(topic)
        if was is not None and self.topic_ids.get(topic) not in (None, was):
            return f"topic={topic} had id {was}, now {self.topic_ids[topic]}"
        offsets = {
            int(k.rsplit("/", 1)[1]): int(v)
            for k, v in meta.get("offsets", {}).items()
            if k.rsplit("/", 1)[0] == topic
        }
        ends = self._cluster.log_ends([(topic, p) for p in offsets])
        for p, off in sorted(offsets.items()):
            if off > ends[(topic, p)]:
                end = ends[(topic, p)]
                return f"topic={topic} partition={p} offset {off} is beyond its log end {end}"
        return None

    def _check_inputs(self, mv: ModelVersion) -> None:
        """A learner cannot change its inputs: resuming from a version trained on other
        ones than the model declares now (a feature renamed or removed) is an error, not
        a learner reading zeros."""
        assert self.learner is not None
        trained, declared = self.learner.featuriser.spec, self.config.definition.spec
        if trained == declared:
            return
        old = dict.fromkeys((*trained.categorical, *trained.numeric))
        new = dict.fromkeys((*declared.categorical, *declared.numeric))
        raise CatalogError(
            f"model {self.config.model!r}: version {mv.version} was trained on other inputs "
            f"than the project declares now (no longer declared: {[n for n in old if n not in new]}"
            f", new: {[n for n in new if n not in old]}, crosses or size changed: "
            f"{trained.crosses != declared.crosses or trained.hash_bits != declared.hash_bits})"
            "; a learner cannot change its inputs: declare the changed model under a new "
            "name, or move its registry folder aside to train it anew"
        )

    def _load(self) -> None:
        """Resume from the newest online snapshot, or start a fresh learner."""
        self._loaded = True
        try:
            self._resume()
        finally:
            if self.ranks is not None and self.learner is not None:
                self._sync = SyncState(self.learner)

    def _resume(self) -> None:
        if self._cluster is not None:
            self.topic_ids = self._cluster.topic_ids([self.input_topic])
        mv = self._resume_point()
        if mv is None:
            self.learner = self._new_learner()
            return
        self.learner = self.registry.load_learner(mv)
        self._check_inputs(mv)
        meta = mv.metadata
        self.version = mv.version
        self._resume_version = mv.version
        self.rollout.resume(mv)
        self._follow_arms()
        try:  # the rows its parity was checked on: the next versions are checked at once
            self.rollout.sample_rows = self.registry.rows(mv)
        except RegistryError as exc:
            log.warning("model=%s: no parity rows restored: %s", self.config.model, exc)
        self._last_snapshot = self._clock()  # the next snapshot is an interval away
        MODEL_VERSION.labels(self.config.model).set(self.version)
        why = self._stale(meta)
        if why:
            log.warning(
                "model=%s version=%d was trained on other topics (%s): starting a new "
                "lineage from its learner, with offsets for the topics as they are now",
                self.config.model,
                mv.version,
                why,
            )
            return
        self.offsets = {k: int(v) for k, v in meta.get("offsets", {}).items()}
        self._snapshot_offsets = dict(self.offsets)
        self.fingerprint = int(meta.get("fingerprint", 0))
        self.examples_seen = int(meta.get("examples_seen", 0))
        self.ids_fingerprint = int(meta.get("ids_fingerprint", 0))
        EXAMPLES_SEEN.labels(self.config.model).set(self.examples_seen)
        self.duplicates = int(meta.get("duplicates_dropped", 0))
        seen = self.registry.read_file(mv, SEEN_FILE)
        if seen is not None:
            self.seen = SeenIds.from_bytes(seen, self.config.dedup_window)
        self.lineage_id = str(meta.get("lineage_id") or self.lineage_id)
        log.info(
            "model=%s resumed from version=%d examples_seen=%d offsets=%s",
            self.config.model,
            self.version,
            self.examples_seen,
            self.offsets,
        )

    def _resume_offsets(self) -> dict[str, int]:
        """Per partition: the first pending example, else the passed offset."""
        out = dict(self.offsets)
        for k in reversed(range(len(self._pending))):
            start = self._head if k == 0 else 0
            partitions = self._pending[k].partitions[start:]
            offsets = self._pending[k].offsets[start:]
            uniq, first = np.unique(partitions, return_index=True)
            for p, i in zip(uniq.tolist(), first.tolist(), strict=True):
                out[f"{self.input_topic}/{p}"] = int(offsets[i])
        return out

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        if not self._loaded:
            self._load()
        # The snapshot is the truth: a partition it has not learned from starts at the
        # beginning, whatever the group's committed offset says.
        resume = self._resume_offsets()
        self._own.update(f"{t}/{p}" for t, p in partitions)
        return {(t, p): resume.get(f"{t}/{p}", OFFSET_BEGINNING) for t, p in partitions}

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        gone = np.array([p for t, p in partitions if t == self.input_topic], dtype=np.int32)
        self.offsets = self._resume_offsets()  # their pending examples are read again
        if self._head:
            self._pending[0] = self._pending[0].slice(self._head, len(self._pending[0]))
            self._head = 0
        kept: list[Examples] = []
        for b in self._pending:
            keep = np.flatnonzero(~np.isin(b.partitions, gone))
            if len(keep) == len(b):
                kept.append(b)
            elif len(keep):
                kept.append(b.select(keep))
        self._pending = kept
        self._pending_n = sum(len(b) for b in kept)

    # -- learning --------------------------------------------------------------------------
    def process(self, records: list[Record]) -> list[Output]:
        """``process_batch`` of ``records`` (the runtime's record-by-record retries, tests)."""
        outputs: list[Output] = []
        for batch in RecordBatch.of(records):
            outputs += self.process_batch(batch)
        return outputs

    def process_batch(self, batch: RecordBatch) -> list[Output]:
        """Drop the examples already learned or pending, featurise the rest (a failure
        leaves no trace), then learn every full micro-batch."""
        if not self._loaded:
            self._load()
        if not len(batch):
            return []
        assert self.learner is not None
        values = batch.values
        ids = example_ids(zip(map(_REQUEST_ID, values), map(_ITEM_ID, values), strict=True))
        keep = self.seen.fresh(ids)
        if self._pending:
            keep &= ~np.isin(ids, np.concatenate([b.ids for b in self._pending]))
        dropped = len(batch) - int(keep.sum())
        if dropped:
            batch, ids = batch.select(np.flatnonzero(keep)), ids[keep]
        if len(batch):
            block = self._block(batch, self.learner, ids)
            self._pending.append(block)
            self._pending_n += len(block)
            self._last_arrival = self._clock()
        if dropped:
            self.duplicates += dropped
            self._round.duplicates += dropped
            DUPLICATES.labels(self.config.model).inc(dropped)
        self._unadvanced = True
        bs = self.config.batch_size
        while self._pending_n >= bs:
            self._learn(self._take(bs))
        return []

    def _block(self, batch: RecordBatch, learner: Learner, ids: np.ndarray) -> Examples:
        """The batch's columns (``ids``: the examples' ids), featurised by ``learner``."""
        values = batch.values
        n = len(values)
        feats = list(map(_FEATURES, values))
        raw: dict[str, Column] = {}
        if type(feats[0]) is dict:  # a full TrainingExample (``process``)
            for name in self._feature_names():
                raw[name] = [x.get(name) for x in feats]
        else:  # ExampleDecoder's struct: fields f0, f1, … in the order of its names
            numeric = self._numeric_only()
            for i, name in enumerate(type(feats[0]).__struct_encode_fields__):
                get = attrgetter(f"f{i}")
                nums = _numbers(map(get, feats), n) if name in numeric else None
                raw[name] = list(map(get, feats)) if nums is None else nums
        idx, val = learner.featuriser.transform_lists(n, raw)
        y = np.fromiter(map(_LABEL, values), dtype=np.float64, count=n)
        label_ts = np.full(n, np.nan)
        joined_at = np.full(n, np.nan)  # for positives only: freshness figures
        # freshness is about served traffic: a replayed log's positives (never served, so
        # no served version) happened whenever the log says, maybe months ago
        positive = [
            i for i in np.flatnonzero(y > 0).tolist() if values[i].served_version is not None
        ]
        if positive:
            label_ts[positive] = [
                np.nan if values[i].label_ts is None else values[i].label_ts for i in positive
            ]
            joined_at[positive] = batch.timestamps(positive)
        return Examples(
            partitions=batch.partitions,
            offsets=batch.offsets,
            ids=ids,
            idx=idx,
            val=val,
            y=y,
            served_version=optional_column(list(map(_SERVED_VERSION, values)), np.int64, 0),
            served_score=optional_column(list(map(_SERVED_SCORE, values)), np.float64, np.nan),
            shadow_version=optional_column(list(map(_SHADOW_VERSION, values)), np.int64, 0),
            shadow_score=optional_column(list(map(_SHADOW_SCORE, values)), np.float64, np.nan),
            label_ts=label_ts,
            joined_at=joined_at,
            raw=raw,
        )

    def _numeric_only(self) -> frozenset[str]:
        """Features every learner reads as numbers only (never as a category)."""
        specs = [self.config.definition.spec, *self.rollout.specs()]
        numeric = {f for s in specs for f in s.numeric}
        return frozenset(numeric - {f for s in specs for f in s.categorical})

    def _take(self, n: int) -> Examples:
        """The first ``n`` pending examples, removed from the queue."""
        taken: list[Examples] = []
        need = n
        while need > 0:
            b, start = self._pending[0], self._head
            left = len(b) - start
            if left <= need:
                taken.append(b.slice(start, len(b)) if start else b)
                self._pending.pop(0)
                self._head = 0
                need -= left
            else:
                taken.append(b.slice(start, start + need))
                self._head += need
                need = 0
        self._pending_n -= n
        return Examples.concat(taken)

    def _learn(self, chunk: Examples) -> None:
        assert self.learner is not None
        try:
            p = self.learner.predict_learn_featurised(chunk.idx, chunk.val, chunk.y)
        except Exception as exc:
            raise StateLost(
                f"model={self.config.model} learner failed half-way through an update "
                f"({type(exc).__name__}: {exc}); resume from the last snapshot"
            ) from exc
        fp = fingerprint_sum(self.input_topic, chunk.partitions, chunk.offsets)
        self.fingerprint = (self.fingerprint + fp) & _MASK
        self.seen.add(chunk.ids)
        self.ids_fingerprint = (self.ids_fingerprint + int(chunk.ids.sum(dtype=np.uint64))) & _MASK
        learned_at = self._clock()
        n = len(chunk)
        self.examples_seen += n
        self._learned_since_snapshot += n
        self._learned_since_publish += n
        EXAMPLES_TRAINED.labels(self.config.model).inc(n)
        EXAMPLES_SEEN.labels(self.config.model).set(self.examples_seen)
        if self.ranks is not None:  # rank 0 counts every rank's at the next round
            assert self._sync is not None
            self._sync.touch(chunk.idx, chunk.val)
            self.rollout.keep_rows(chunk)
            self._round.add(chunk, p, fp, learned_at)
            return
        self.metrics.update(chunk.y, p)
        self.rollout.learned(chunk, p, self.learner)
        for i in np.flatnonzero((chunk.y > 0) & ~np.isnan(chunk.label_ts)).tolist():
            joined = chunk.joined_at[i]  # when the joiner produced it (its Kafka timestamp)
            self._positives.add(
                float(chunk.label_ts[i]),
                learned_at if joined != joined else float(joined),
                learned_at,
            )

    def _learn_pending(self) -> None:
        if self._pending_n:
            self._learn(self._take(self._pending_n))

    def tick(self, now: float) -> list[Output]:
        """Learn a partial micro-batch after ``flush_after_s`` without examples; publish
        version 1 before any example arrives (so serving has a model at once). Full
        snapshots are published by ``advance``, when the offsets they record are safe; a
        serving-only version that is due is published here too once the input has gone
        quiet (nothing processed since the last ``advance``: the offsets it records then
        cover everything it learned), so the last examples before a pause are served."""
        if not self._loaded:
            self._load()
        if self.stopped:
            return []
        if self._pending_n and now - self._last_arrival >= self.config.flush_after_s:
            self._learn_pending()
        if self.ranks is not None:  # rounds publish; one is held when the offsets are safe
            return self._sync_round() if not self._unadvanced and self._round_due(now) else []
        if (
            self.version == 0
            and not self.offsets
            and not self._pending_n
            and not self.examples_seen
        ):
            return self.publish()
        if not self._unadvanced and self._serving_only_due(now):
            return self.publish(full=False)
        return []

    def _serving_only_due(self, now: float) -> bool:
        every = self.config.publish_interval_s
        if every is None or now - self._last_publish < every:
            return False
        return bool(self._learned_since_publish or self._pending_n)

    def _switch(self, switch: Switch) -> None:
        """Continue from another learner (a promoted candidate, or the fallback after a
        rollback): a new lineage from the current offsets (see
        ``streamlearn.streams.learning.rollout``)."""
        assert self.learner is not None
        old = self.learner
        self.learner = switch.learner
        self.version = switch.parent_version
        self.lineage_id = uuid.uuid4().hex
        self.rollout.switched(old, switch)
        log.warning(
            "model=%s continues from version %d (%s): a new lineage from offsets %s",
            self.config.model,
            switch.parent_version,
            switch.action,
            self._resume_offsets(),
        )

    def publish(self, full: bool = True) -> list[Output]:
        """Decide the rollout (which may switch the learner), learn what is pending,
        snapshot the learner (``full``: with its state, a resume point; else
        serving-only), check its ONNX graph on recent real rows, publish it to the
        registry (as ``rejected`` when the check fails: it is never served, a full one's
        state is still a resume point) with those rows when full, and return the
        announcements. With no row to check on (a snapshot resumed without rows, nothing
        learned since) nothing is published until rows are in; the very first version,
        before any request was served, is checked on rows made from its spec."""
        fresh = not self.version and not self.examples_seen  # no row exists anywhere yet
        if not (self.rollout.sample_rows or self._pending_n or fresh):
            # a snapshot resumed without rows, nothing learned since: publish once rows are in
            log.info("model=%s: publish held until rows to check it on", self.config.model)
            return []
        switch = self.rollout.decide(self.version, self._resume_version)
        if switch is not None:
            self._switch(switch)
            full = True  # the new lineage's first version is a resume point
        assert self.learner is not None
        t0 = time.perf_counter()
        self._learn_pending()
        report = self.metrics.report()
        snap = self.learner.snapshot(state=full)
        offsets = self._resume_offsets()
        stage, parity = None, None
        rows, rows_from = self.rollout.sample_rows, "learned"
        if not rows:  # the first version, before any request was served (models.parity)
            rows, rows_from = spec_rows(self.learner.featuriser.spec), "spec"
        try:
            idx, val = self.learner.featuriser.transform_many(rows)
            parity = onnx_parity(snap, self.learner, idx, val)
        except ParityError as exc:
            stage = Stage.REJECTED
            PARITY_FAILURES.labels(self.config.model, "production").inc()
            log.error("model=%s: snapshot not served: %s", self.config.model, exc)
        mv = self.registry.publish(
            self.config.model,
            snap,
            extra={
                "origin": ONLINE,
                "offsets": offsets,
                "topic_ids": dict(self.topic_ids),
                "lineage_id": self.lineage_id,
                "fingerprint": str(self.fingerprint),
                "ids_fingerprint": str(self.ids_fingerprint),
                "examples_seen": self.examples_seen,
                "duplicates_dropped": self.duplicates,
                "metrics": report,
                "parent_version": self.version or None,
                FRESHNESS_KEY: self._positives.to_metadata(),
                "parity_max_abs_diff": parity,
                "parity_rows": {"count": len(rows), "from": rows_from},
            },
            stage=stage,
            rows=rows if full and rows_from == "learned" else None,
            files={**self.rollout.files(), SEEN_FILE: self.seen.to_bytes()} if full else None,
        )
        self._positives.clear()
        self.rollout.published(mv, full)
        self._follow_arms()
        self.version = mv.version
        self._last_publish = self._clock()
        self._learned_since_publish = 0
        if full:
            self._resume_version = mv.version
            self._snapshot_offsets = offsets
            self._last_snapshot = self._last_publish
            self._learned_since_snapshot = 0
        if self.config.keep_versions > 0:
            protect = self.rollout.protected() | (
                set() if self._resume_version is None else {self._resume_version}
            )
            self.registry.prune(self.config.model, self.config.keep_versions, protect=protect)
        SNAPSHOT_SECONDS.labels(self.config.model).set(time.perf_counter() - t0)
        MODEL_VERSION.labels(self.config.model).set(mv.version)
        for k, v in report.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                PROGRESSIVE.labels(self.config.model, k).set(v)
        log.log(
            logging.INFO if full else logging.DEBUG,
            "model=%s published version=%d (%s) examples_seen=%d auc=%s",
            self.config.model,
            mv.version,
            "full" if full else "serving-only",
            self.examples_seen,
            report.get("auc"),
        )
        upd = ModelUpdate(
            model=self.config.model,
            version=mv.version,
            created_at=float(mv.metadata.get("created_at", time.time())),
            metrics={k: v for k, v in report.items() if v is not None},
        )
        announced = (
            [] if stage else [Output(self.topics.model_updates, encode(upd), self.config.model)]
        )
        return announced + self.rollout.take_outputs()

    # -- checkpoints: the snapshot is the checkpoint ----------------------------------------
    def advance(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        """Everything below ``offsets`` is learned, pending, or dead-lettered with its dead
        letter acknowledged; publish a snapshot when one is due (it records these offsets,
        or the first pending example's)."""
        for (t, p), off in offsets.items():
            key = f"{t}/{p}"
            if off > self.offsets.get(key, 0):
                self.offsets[key] = off
        self._unadvanced = False
        now = self._clock()
        if self.ranks is not None:
            return self._sync_round() if not self.stopped and self._round_due(now) else []
        full_due = now - self._last_snapshot >= self.config.snapshot_interval_s
        if full_due and (self._learned_since_snapshot or self._pending_n):
            return self.publish(full=True)
        if self._serving_only_due(now):
            return self.publish(full=False)
        return []

    def finish(self) -> list[Output]:
        """Learn what is pending and publish a last snapshot, so a clean stop loses nothing
        (with ranks: a last round, which stops every rank)."""
        if self.ranks is not None:
            return [] if self.stopped else self._sync_round(stopping=True)
        self._learn_pending()
        moved = self._resume_offsets() != self._snapshot_offsets  # e.g. dead letters only
        return self.publish(full=True) if self._learned_since_snapshot or moved else []

    # -- ranks: sync rounds ----------------------------------------------------------------
    def _sync_round(self, stopping: bool = False) -> list[Output]:
        """A round (``streamlearn.streams.learning.ranks``): every rank learns what it has
        pending, the learners' states are reduced into one, every rank reports its offsets
        and learning to rank 0, which counts them, decides, and publishes the snapshot when
        one is due — one state at this round with every rank's offsets, a consistent cut."""
        assert self.ranks is not None and self._sync is not None
        self._learn_pending()
        self._reduce(self.ranks, self._sync)
        offsets = {k: v for k, v in self._resume_offsets().items() if k in self._own}
        report = self._round.report(offsets, stopping=stopping, resumed=self._resume_version)
        log.debug(
            "model=%s rank %d round %d: learned %d, offsets %s",
            self.config.model,
            self.ranks.config.rank,
            self._rounds,
            self._round.learned,
            offsets,
        )
        self._round = RoundBuffer()
        reports = self.ranks.gather(report)
        decision = self._merge(reports) if reports is not None else None
        decision = self.ranks.broadcast(decision)
        self._rounds += 1
        self._next_round = self._clock() + self.ranks.config.sync_interval_s
        SYNC_ROUNDS.labels(self.config.model).inc()
        SYNC_BYTES.labels(self.config.model).inc(self.ranks.bytes_sent - self._bytes_counted)
        self._bytes_counted = self.ranks.bytes_sent
        if decision.get("abort"):
            raise StateLost(decision["abort"])
        outputs: list[Output] = []
        if reports is not None and decision["publish"]:
            outputs = self.publish(full=decision["publish"] == "full")
        if decision["stop"]:
            self.stopped = True
            log.info(
                "model=%s rank %d: stopping with the others",
                self.config.model,
                self.ranks.config.rank,
            )
            if self.on_stop is not None:
                self.on_stop()
        return outputs

    def _round_due(self, now: float) -> bool:
        assert self.ranks is not None
        return now >= self._next_round or self._round.learned >= self.ranks.config.sync_every

    @staticmethod
    def _reduce(ranks: RankGroup, sync: SyncState) -> None:
        """Bring every rank's learner to the same state: the rows each changed, or whole
        arrays when that moves fewer bytes (``streamlearn.models.sync``)."""
        coords = sync.touched()
        total = ranks.all_reduce(np.array([len(coords)], dtype=np.int64))
        if int(total[0]) * sync.row_bytes * ranks.config.world < 2 * sync.dense_bytes:
            rows = sync.rows(coords)
            mine = np.hstack([coords[:, None].astype(np.float64), rows]).ravel()
            parts = []
            for got in ranks.all_gather(mine):
                got = got.reshape(-1, 1 + rows.shape[1])
                parts.append((got[:, 0].astype(np.int64), got[:, 1:]))
            sync.apply_rows(parts)
        else:
            deltas, maxima, changed = sync.buffers()
            ranks.all_reduce(deltas, "sum")
            ranks.all_reduce(maxima, "max")
            ranks.all_reduce(changed, "sum")
            sync.apply(deltas, maxima, changed)

    def _merge(self, reports: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank 0: count every rank's round as its own learning, and decide."""
        if self._rounds == 0:
            resumed = {r["resumed"] for r in reports}
            if len(resumed) > 1:
                return {
                    "abort": f"model={self.config.model}: the ranks resumed from different "
                    f"versions {sorted(str(v) for v in resumed)}; restarting them together"
                }
        for r in reports[1:]:  # rank 0's own counters moved as it learned
            self.offsets.update(r["offsets"])
            self.fingerprint = (self.fingerprint + int(r["fingerprint"])) & _MASK
            self.ids_fingerprint = (self.ids_fingerprint + int(r["ids_fingerprint"])) & _MASK
            self.examples_seen += r["learned"]
            self._learned_since_snapshot += r["learned"]
            self._learned_since_publish += r["learned"]
            self.duplicates += r["duplicates"]
            self.seen.add(r["ids"])
            self.rollout.add_rows(r["rows"])
        EXAMPLES_SEEN.labels(self.config.model).set(self.examples_seen)
        sc = scores(reports)
        if len(sc["y"]):
            self.metrics.update(sc["y"], sc["p"])
            self.rollout.record(
                sc["y"],
                sc["p"],
                sc["served_version"],
                sc["served_score"],
                sc["shadow_version"],
                sc["shadow_score"],
            )
        for r in reports:
            for label_ts, joined, learned_at in r["positives"].tolist():
                self._positives.add(label_ts, joined, learned_at)
        stop = any(r["stopping"] for r in reports)
        now = self._clock()
        publish = None
        learned = self._learned_since_snapshot
        if self.version == 0 and not self.examples_seen and not self.offsets:
            publish = "full"  # version 1 before any example (serving has a model at once)
        elif stop:
            moved = self._resume_offsets() != self._snapshot_offsets
            publish = "full" if learned or moved else None
        elif learned and now - self._last_snapshot >= self.config.snapshot_interval_s:
            publish = "full"
        elif self._serving_only_due(now):
            publish = "serving"
        return {"stop": stop, "publish": publish}

    def close(self) -> None:
        if self.ranks is not None:
            self.ranks.close()
