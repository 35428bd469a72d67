"""The three processors as ``streamlearn.streams.testing.checks`` scenarios: input, build,
observation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry
from streamlearn.streams.contracts import FeatureLogRecord, ServedItem, TrainingExample, encode
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.joiner import Joiner, JoinerConfig
from streamlearn.streams.learning.trainer import OnlineTrainer, TrainerConfig, is_resume_point
from streamlearn.streams.runtime.processor import Processor
from streamlearn.streams.state.changelog import is_control_key
from streamlearn.streams.state.store import PartitionStore
from streamlearn.streams.testing.checks import Scenario
from streamlearn.streams.testing.memory import MemoryBroker
from tests.example import CATALOG, FEED, MODEL_NAMES, MODELS

TOPICS = Topics("checks.")
T0 = 1_700_000_000.0
KINDS = ("impression", "impression", "click", "impression", "hide", "like", "impression")
#: Valid JSON that breaks each contract, plus bytes that are not JSON.
BAD_EVENTS = (
    b"{not json",
    b'{"event_id": "x"}',
    b'{"event_id":"e","type":"teleport","ts":1,"user_id":"u","item_id":"i",'
    b'"surface":"feed","request_id":"r"}',
)


def _event(i: int, kind: str, user: str, item: str, ts: float, request: str = "") -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{i}",
            "type": kind,
            "ts": ts,
            "user_id": user,
            "item_id": item,
            "surface": "feed",
            "request_id": request or f"r{i}",
            "position": i % 3,
            "context": {"category": f"c{i % 4}"},
        }
    )


def dead_letters(broker: MemoryBroker, topic: str) -> set[tuple[int, int, str]]:
    """(source partition, source offset, reason) of every dead letter of ``topic``."""
    out = set()
    for m in broker.messages(Topics.dlq(topic)):
        h = {k: (v or b"").decode() for k, v in m.headers() or []}
        out.add((int(h["source.partition"]), int(h["source.offset"]), h["error.reason"]))
    return out


def store_contents(root: Path) -> dict[str, Any]:
    """Every store's entries, offsets and committed counts (not its topic ids: each broker
    has its own; nor the joiner's marks, which depend on when a commit came)."""
    out: dict[str, Any] = {}
    for path in sorted(root.glob("p*")):
        s = PartitionStore(path, int(path.name[1:]))
        try:
            counts = {k: v for k, v in s.meta().items() if ":" in k}
            out[path.name] = (s.items(), s.offsets(), counts)
        finally:
            s.close()
    return out


def latest(broker: MemoryBroker, topic: str) -> dict[tuple[bytes | None, int], bytes | None]:
    """The newest value per (key, partition), control records left out."""
    return {k: v for k, v in broker.latest(topic).items() if not is_control_key(k[0])}


# -- the feature processor ------------------------------------------------------------------
def _setup_loop(broker: MemoryBroker) -> None:
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))


def _produce_features(broker: MemoryBroker, part: int) -> None:
    base = part * 200
    for i in range(base, base + 200):
        user = f"u{i % 9}"
        broker.append(
            TOPICS.activity,
            _event(i, KINDS[i % len(KINDS)], user, f"i{i % 6}", T0 + 3.0 * i),
            user.encode(),
        )
        if i % 70 == 5:
            broker.append(TOPICS.activity, BAD_EVENTS[(i // 70) % len(BAD_EVENTS)], user.encode())


def _build_features(root: Path, broker: MemoryBroker, clock: Callable[[], float]) -> Processor:
    # a tiny cache, so batches also read aggregates back from RocksDB
    return FeatureProcessor(TOPICS, root / "state", CATALOG, cluster=broker, cache_size=4)


def _observe_features(broker: MemoryBroker, root: Path) -> dict[str, Any]:
    return {
        "features": latest(broker, TOPICS.features),
        "dead letters": dead_letters(broker, TOPICS.activity),
        "stores": store_contents(root / "state" / "features"),
    }


FEATURES = Scenario(
    name="features",
    build=_build_features,
    setup=_setup_loop,
    produce=_produce_features,
    observe=_observe_features,
)


# -- the joiner -----------------------------------------------------------------------------
def _produce_joiner(broker: MemoryBroker, part: int) -> None:
    """Requests (some never feature-logged), impressions, clicks in the window and likes
    after it; each topic in event-time order, as producers publish them."""
    logs: list[tuple[float, bytes, bytes]] = []
    events: list[tuple[float, bytes, bytes]] = []
    for r in range(part * 30, part * 30 + 30):
        user = f"u{r % 5}"
        key = user.encode()
        ts = T0 + 4.0 * r
        rid = f"req{r}"
        items = [f"i{(r + k) % 7}" for k in range(3)]
        log = FeatureLogRecord(
            request_id=rid,
            user_id=user,
            surface="feed",
            ts=ts,
            model="feed",
            version=1,
            items=[
                ServedItem(it, {"user_id": user, "item_id": it, "n": k}, 0.1 * k)
                for k, it in enumerate(items)
            ],
        )
        if r % 11 != 3:  # some requests never show up in the feature-log
            logs.append((ts, encode(log), key))
        if r % 13 == 7:
            logs.append((ts, b'{"request_id": 1}', key))
        for k, it in enumerate(items[:2]):
            events.append(
                (ts + 0.5, _event(r * 10 + k, "impression", user, it, ts + 0.5, rid), key)
            )
        if r % 3 == 0:
            events.append(
                (ts + 1.0, _event(r * 10 + 5, "click", user, items[0], ts + 1.0, rid), key)
            )
        if r % 4 == 0 and r % 30 < 20:  # too late for the label window (and time-ordered)
            events.append(
                (ts + 30.0, _event(r * 10 + 6, "like", user, items[1], ts + 30.0, rid), key)
            )
    for _, value, key in sorted(logs, key=lambda x: x[0]):
        broker.append(TOPICS.feature_log, value, key)
    for _, value, key in sorted(events, key=lambda x: x[0]):
        broker.append(TOPICS.activity, value, key)


def _build_joiner(root: Path, broker: MemoryBroker, clock: Callable[[], float]) -> Processor:
    config = JoinerConfig(window_s=6.0, orphan_timeout_s=20.0, idle_lateness_s=None)
    return Joiner(TOPICS, root / "state", CATALOG, MODELS, config, cluster=broker)


def _observe_joiner(broker: MemoryBroker, root: Path) -> dict[str, Any]:
    examples = []  # every one, so an example emitted twice shows
    for m in broker.messages(TOPICS.training_examples("feed")):
        ex = orjson.loads(m.value() or b"{}")
        examples.append(
            (ex["request_id"], ex["item_id"], ex["label"], orjson.dumps(ex["features"]))
        )
    return {
        "examples": sorted(examples),
        "dead letters": dead_letters(broker, TOPICS.feature_log),
        "stores": store_contents(root / "state" / "joiner"),
    }


JOINER = Scenario(
    name="joiner",
    build=_build_joiner,
    setup=_setup_loop,
    produce=_produce_joiner,
    observe=_observe_joiner,
)


# -- the online trainer ---------------------------------------------------------------------
TRAIN_BATCH = 16
SPEC = FeatureSpec(categorical=("user_id", "item_id"), numeric=("n",), hash_bits=10)
PROBES = [{"user_id": f"u{u}", "item_id": f"i{i}", "n": 1.0} for u in range(6) for i in range(5)]


def _setup_trainer(broker: MemoryBroker) -> None:
    broker.create_topics([TOPICS.training_examples("feed")], partitions=1)
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))


def trainer_example(part: int, i: int) -> TrainingExample:
    """The ``i``-th example of input part ``part`` (seeded: the same each call)."""
    rng = np.random.default_rng(part * 1000 + i)
    u, it = int(rng.integers(6)), int(rng.integers(5))
    return TrainingExample(
        request_id=f"r{part}-{i}",
        user_id=f"u{u}",
        item_id=f"i{it}",
        surface="feed",
        ts=T0 + i,
        label=int(rng.random() < (0.6 if (u + it) % 3 == 0 else 0.1)),
        features={"user_id": f"u{u}", "item_id": f"i{it}", "n": float(i % 4)},
        served_version=1,
        served_score=0.5,
    )


#: (part, i) of the examples written twice: again right away, a few records later, and
#: in the next part (as a joiner re-emitting an interval, or a late zombie, would)
TRAIN_DUPLICATES = {0: [(0, 3), (0, 40), (0, 41)], 1: [(0, 100), (1, 7), (0, 5)]}


def _produce_trainer(broker: MemoryBroker, part: int) -> None:
    topic = TOPICS.training_examples("feed")
    again = {i: [d for d in TRAIN_DUPLICATES[part] if d[1] + 4 == i] for i in range(200)}
    for i in range(TRAIN_BATCH * 9):  # whole micro-batches per part
        ex = trainer_example(part, i)
        broker.append(topic, encode(ex), ex.user_id.encode())
        if i in (20, 77):  # a label of 2, and not JSON: contract errors, never learned
            bad = orjson.loads(encode(ex)) | {"label": 2}
            broker.append(topic, orjson.dumps(bad) if i == 20 else b"{", ex.user_id.encode())
        for dp, di in again.get(i, []):
            dup = trainer_example(dp, di)
            broker.append(topic, encode(dup), dup.user_id.encode())


def _build_trainer(root: Path, broker: MemoryBroker, clock: Callable[[], float]) -> Processor:
    config = TrainerConfig(
        definition=FEED.with_spec(SPEC).with_learner(params={"alpha": 0.1, "beta": 0.1}),
        batch_size=TRAIN_BATCH,
        flush_after_s=1e9,
        snapshot_interval_s=6.0,
        publish_interval_s=2.0,  # serving-only versions in between, never resumed from
        keep_versions=3,
    )
    return OnlineTrainer(
        TOPICS, FileRegistry(root / "registry"), config, clock=clock, cluster=broker
    )


def _observe_trainer(broker: MemoryBroker, root: Path) -> dict[str, Any]:
    registry = FileRegistry(root / "registry")
    mv = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
    learner = registry.load_learner(mv)
    return {
        "examples_seen": mv.metadata["examples_seen"],
        "fingerprint": mv.metadata["fingerprint"],
        "ids_fingerprint": mv.metadata["ids_fingerprint"],
        "duplicates_dropped": mv.metadata["duplicates_dropped"],
        "offsets": mv.metadata["offsets"],
        "predictions": tuple(learner.predict_proba_many(PROBES).tolist()),
        "dead letters": dead_letters(broker, TOPICS.training_examples("feed")),
    }


def _trainer_memory(proc: Processor) -> dict[str, Any]:
    assert isinstance(proc, OnlineTrainer) and proc.learner is not None
    return {
        "examples_seen": proc.examples_seen,
        "fingerprint": proc.fingerprint,
        "ids_fingerprint": proc.ids_fingerprint,
        "duplicates_dropped": proc.duplicates,
        "seen": len(proc.seen),
        "offsets": proc._resume_offsets(),
        "predictions": tuple(proc.learner.predict_proba_many(PROBES).tolist()),
    }


TRAINER = Scenario(
    name="trainer",
    build=_build_trainer,
    setup=_setup_trainer,
    produce=_produce_trainer,
    observe=_observe_trainer,
    carried=frozenset({"predictions"}),
    memory=_trainer_memory,
)

SCENARIOS = (FEATURES, JOINER, TRAINER)
