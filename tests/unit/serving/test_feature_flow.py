"""A feature declared in one place flows to serving and to training (no broker: real
RocksDB stores, the real replica's apply, onnxruntime, the joiner)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from streamlearn.models import zoo
from streamlearn.models.features import Featuriser
from streamlearn.models.registry import FileRegistry
from streamlearn.serving.replica import FeatureReplica
from streamlearn.serving.service import PredictionService
from streamlearn.streams.catalog.features import Count, Feature, FeatureCatalog
from streamlearn.streams.contracts import (
    ActivityEvent,
    FeatureLogRecord,
    TrainingExample,
    decode,
)
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.joiner import Joiner, JoinerConfig
from streamlearn.streams.runtime.processor import Output, Record
from tests.example import CATALOG, MODELS, feed_spec, with_features
from tests.unit.serving.helpers import request

T = Topics("t.")
#: The one place the new feature is declared.
LIKES = Feature("user_likes", "user", Count(frozenset({"like"})), "Likes by the user.", "test")
WITH_LIKES = with_features(LIKES)
CATALOG_WITH_LIKES = WITH_LIKES.catalog


def _ev(kind: str, ts: float, item: str = "i1", rid: str = "old") -> ActivityEvent:
    return ActivityEvent(f"{rid}-{kind}-{ts}", kind, ts, "u1", item, "feed", rid, 0, None)


def _features_topic(
    tmp_path: Path, catalog: FeatureCatalog, events: list[ActivityEvent]
) -> list[Output]:
    """What the processor writes to the ``features`` topic for ``events``."""
    proc = FeatureProcessor(T, tmp_path / "state", catalog)
    proc.assign([(T.activity, 0)])
    proc.process([Record(T.activity, 0, n, b"u1", ev) for n, ev in enumerate(events)])
    offsets = {(T.activity, 0): len(events)}
    out = proc.prepare(offsets)
    proc.commit(offsets)
    proc.close()
    return [o for o in out if o.topic == T.features and not str(o.key).startswith("__")]


def _replica(tmp_path: Path, catalog: FeatureCatalog, records: list[Output]) -> FeatureReplica:
    replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path / "replica", catalog)
    replica.apply(
        (str(o.key).encode(), o.value, o.partition or 0) for o in records
    )  # as its consumer thread does with the topic's records
    return replica


def test_a_feature_declared_once_is_processed_served_logged_trained_on(tmp_path: Path) -> None:
    history = [_ev("impression", 100.0), _ev("like", 101.0), _ev("like", 102.0)]

    # processor → features topic → replica: the new feature is stored and replicated
    replica = _replica(
        tmp_path, CATALOG_WITH_LIKES, _features_topic(tmp_path, CATALOG_WITH_LIKES, history)
    )
    user = replica.user("u1")
    assert user is not None and user["user_likes"] == 2
    assert user["user_impressions"] == 1

    # the model's feature spec has it as a numeric input
    spec = feed_spec(hash_bits=12, project=WITH_LIKES)
    assert "user_likes" in spec.numeric and "user_likes" not in feed_spec(12).numeric

    # serving scores it and logs it, exactly as scored
    registry = FileRegistry(tmp_path / "registry")
    learner = zoo.create("ftrl", spec, seed=0)
    learner.learn_many([{"user_id": "u1", "item_id": "i1", "user_likes": 2}], [1.0])
    service = PredictionService(registry, replica, ["feed"], CATALOG_WITH_LIKES)
    service.load(registry.publish("feed", learner.snapshot()))
    reply, served = service.predict("feed", request(["i1", "i2"], request_id="r1"))
    log = decode(FeatureLogRecord, served.encode())  # as it travels over the feature log
    assert [i.features["user_likes"] for i in log.items] == [2, 2]

    # the joiner labels the logged row: the training example carries the feature ...
    joiner = Joiner(
        T, tmp_path / "joiner", CATALOG, MODELS, JoinerConfig(window_s=5.0, idle_lateness_s=None)
    )
    joiner.assign([(T.feature_log, 0), (T.activity, 0)])
    logged = log
    shown = [_ev("impression", log.ts, "i1", "r1"), _ev("click", log.ts + 1, "i1", "r1")]
    out = joiner.process(  # a positive comes out at once
        [Record(T.feature_log, 0, 0, b"u1", logged)]
        + [Record(T.activity, 0, n + 1, b"u1", ev) for n, ev in enumerate(shown)]
    )
    # both topics move on (the joiner's watermark is the slower topic's event time)
    later = msgspec.structs.replace(logged, request_id="r9", ts=log.ts + 60, items=[])
    out += joiner.process(
        [
            Record(T.feature_log, 0, 8, b"u1", later),
            Record(T.activity, 0, 9, b"u1", _ev("impression", log.ts + 60, "z", "r9")),
        ]
    )
    examples = [decode(TrainingExample, o.value) for o in out + joiner.tick(0.0)]
    assert [(e.item_id, e.label, e.features["user_likes"]) for e in examples] == [("i1", 1, 2)]

    # ... and the trainer's featuriser gives it a live slot (log1p(2) in its numeric slot)
    _, val = Featuriser(spec).transform_one(examples[0].features)
    slot = 1 + len(spec.categorical) + spec.numeric.index("user_likes")
    assert val[slot] == np.float32(np.log1p(2.0))
    assert reply.scores[0] > reply.scores[1]  # the model learnt from that row
    replica.stop()


def test_without_the_declaration_nothing_of_it_appears(tmp_path: Path) -> None:
    """The control: the default catalog neither stores nor serves ``user_likes``."""
    history = [_ev("impression", 100.0), _ev("like", 101.0)]
    replica = _replica(tmp_path, CATALOG, _features_topic(tmp_path, CATALOG, history))
    user = replica.user("u1")
    assert user is not None and "user_likes" not in user
    registry = FileRegistry(tmp_path / "registry")
    learner = zoo.create("ftrl", feed_spec(12), seed=0)
    service = PredictionService(registry, replica, ["feed"], CATALOG)
    service.load(registry.publish("feed", learner.snapshot()))
    _, served = service.predict("feed", request(["i1"]))
    log = decode(FeatureLogRecord, served.encode())
    assert "user_likes" not in log.items[0].features
    replica.stop()
