"""Impressions serving never scored (a replayed log): examples with the features the store
held just before each impression, marked not served; and the pieces that make them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson

from streamlearn.streams.contracts import (
    ActivityEvent,
    FeatureLogRecord,
    FeatureRecord,
    ServedItem,
    TrainingExample,
    decode,
    encode,
)
from streamlearn.streams.features.history import FeatureHistory
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.joiner import Joiner, JoinerConfig
from streamlearn.streams.runtime.processor import Record
from streamlearn.streams.testing.memory import MemoryBroker
from tests.example import CATALOG, MODEL_NAMES, MODELS

T = Topics("r.")


def _ev(rid: str, ts: float, item: str, kind: str, user: str = "u1", surface: str = "feed") -> Any:
    return ActivityEvent(f"{rid}-{item}-{kind}", kind, ts, user, item, surface, rid, 0)


def _record(entity: str, eid: str, ts: float, values: dict[str, float]) -> bytes:
    return encode(FeatureRecord(entity, eid, values, ts))


def _broker() -> MemoryBroker:
    broker = MemoryBroker(partitions=2)
    broker.create_topics(T.loop_topics(MODEL_NAMES))
    # the store's changelog: the user before and after the impression, the item's partials
    broker.append(T.features, _record("user", "u1", 50.0, {"user_impressions": 2}), b"user/u1", 0)
    broker.append(T.features, _record("user", "u1", 150.0, {"user_impressions": 5}), b"user/u1", 0)
    broker.append(T.features, _record("item", "i1", 40.0, {"item_impressions": 7}), b"item/i1", 0)
    broker.append(T.features, _record("item", "i1", 60.0, {"item_impressions": 3}), b"item/i1", 1)
    return broker


def test_the_history_gives_values_strictly_before_a_time_partials_merged() -> None:
    history = FeatureHistory(_broker(), T.features, CATALOG)
    history.catch_up()
    assert history.at("user", "u1", 100.0)["user_impressions"] == 2  # type: ignore[index]
    assert history.at("user", "u1", 150.0)["user_impressions"] == 2  # type: ignore[index]
    assert history.at("user", "u1", 150.1)["user_impressions"] == 5  # type: ignore[index]
    assert history.at("user", "u1", 10.0) is None
    assert history.at("item", "i1", 100.0)["item_impressions"] == 10  # type: ignore[index]
    assert history.at("item", "i1", 50.0)["item_impressions"] == 7  # type: ignore[index]


def _joiner(tmp_path: Path, broker: MemoryBroker) -> Joiner:
    config = JoinerConfig(window_s=8.0, orphan_timeout_s=30.0, idle_lateness_s=5.0)
    j = Joiner(T, tmp_path, CATALOG, MODELS, config, cluster=broker)
    j.assign([(T.feature_log, 0), (T.activity, 0)])
    return j


def _process(j: Joiner, values: list[Any]) -> None:
    def topic(v: Any) -> str:
        return T.feature_log if isinstance(v, FeatureLogRecord) else T.activity

    j.process([Record(topic(v), 0, n, b"k", v) for n, v in enumerate(values)])


REPLAYED = [
    _ev("r1", 100.0, "i1", "impression"),
    _ev("r1", 100.0, "i2", "impression"),
    _ev("r1", 103.0, "i1", "click"),
    _ev("r1", 120.0, "i2", "click"),  # after the label window: a negative
    _ev("x", 200.0, "i3", "impression", user="u3"),  # moves event time on
]


def _check_replayed(examples: list[TrainingExample]) -> None:
    by_item = {e.item_id: e for e in examples if e.request_id == "r1"}
    assert set(by_item) == {"i1", "i2"}
    for item, label in (("i1", 1), ("i2", 0)):
        ex = by_item[item]
        assert not ex.served and ex.served_version is None and ex.served_score is None
        assert ex.label == label and ex.surface == "feed"
        # the features the store held just before the impression, not after it
        assert ex.features["user_impressions"] == 2
    assert by_item["i1"].features["item_impressions"] == 10  # partials merged
    assert by_item["i2"].features["item_impressions"] == 0  # never seen: the default
    assert by_item["i1"].label_ts == 103.0
    raw = orjson.dumps(msgspec.to_builtins(by_item["i1"]))
    assert decode(TrainingExample, raw) == by_item["i1"]  # the contract round-trips it


def test_a_replayed_log_alone_becomes_examples_not_served(tmp_path: Path) -> None:
    j = _joiner(tmp_path, _broker())
    _process(j, REPLAYED)
    assert j.tick(1000.0) == []  # the watermark waits for a feature-log that may come
    out = j.tick(1006.0)  # no feature-log record for 5 s: activity's event time decides
    assert {o.topic for o in out} == {T.training_examples("feed")}
    _check_replayed([decode(TrainingExample, o.value) for o in out])


def test_served_and_replayed_requests_side_by_side(tmp_path: Path) -> None:
    j = _joiner(tmp_path, _broker())
    served = [
        FeatureLogRecord(
            "s1", "u2", "feed", 100.0, "feed", 3, [ServedItem("i9", {"item_id": "i9"}, 0.2)]
        ),
        _ev("s1", 100.0, "i9", "impression", user="u2"),
        FeatureLogRecord("s2", "u4", "feed", 300.0, "feed", 3, []),  # feature-log moves on
    ]
    _process(j, [*REPLAYED, *served])
    examples = [decode(TrainingExample, o.value) for o in j.tick(1000.0)]
    _check_replayed(examples)
    (s1,) = [e for e in examples if e.request_id == "s1"]
    assert s1.served and s1.served_version == 3 and s1.served_score == 0.2
