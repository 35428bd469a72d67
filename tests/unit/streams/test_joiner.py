"""Joiner logic without a broker: label windows, late clicks, orphans, unshown items."""

from __future__ import annotations

from pathlib import Path

from streams.contracts import (
    ActivityEvent,
    FeatureLogRecord,
    ServedItem,
    TrainingExample,
    decode,
)
from streams.joiner import Joiner, JoinerConfig
from streams.processor import Record
from streams.topics import Topics

T = Topics("t.")


def _log(rid: str, ts: float, items: list[str]) -> FeatureLogRecord:
    return FeatureLogRecord(
        request_id=rid,
        user_id="u1",
        surface="feed",
        ts=ts,
        model="feed",
        version=3,
        items=[ServedItem(item_id=i, features={"item_id": i, "x": 1.0}, score=0.1) for i in items],
    )


def _ev(rid: str, ts: float, item: str, kind: str) -> ActivityEvent:
    return ActivityEvent(
        event_id=f"{rid}-{item}-{kind}",
        type=kind,
        ts=ts,
        user_id="u1",
        item_id=item,
        surface="feed",
        request_id=rid,
        position=0,
    )


class Feed:
    def __init__(self, joiner: Joiner) -> None:
        self.j = joiner
        self.offset = 0

    def __call__(self, *values: object) -> None:
        recs = []
        for v in values:
            topic = T.feature_log if isinstance(v, FeatureLogRecord) else T.activity
            recs.append(Record(topic, 0, self.offset, b"u1", v))
            self.offset += 1
        assert self.j.process(recs) == []


def _joiner(tmp_path: Path) -> tuple[Joiner, Feed]:
    j = Joiner(
        T, tmp_path, JoinerConfig(window_s=10.0, orphan_timeout_s=30.0, idle_lateness_s=None)
    )
    j.assign([(T.feature_log, 0), (T.activity, 0)])
    return j, Feed(j)


def _examples(outputs: list) -> list[TrainingExample]:
    assert all(o.topic == T.training_examples("feed") for o in outputs)
    return [decode(TrainingExample, o.value) for o in outputs]


def test_shown_items_labelled_by_engagement_within_window(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path)
    feed(
        _log("r1", 100.0, ["a", "b", "c"]),
        _ev("r1", 100.1, "a", "impression"),
        _ev("r1", 100.1, "b", "impression"),
        _ev("r1", 103.0, "b", "click"),
    )
    assert j.tick(0.0) == []  # watermark 100 (both topics) < 110: window still open
    # both topics move past 110: the watermark is the slower topic's newest event time
    feed(_ev("r9", 110.5, "z", "impression"))
    assert j.tick(0.0) == []  # the feature-log is still at 100
    feed(_log("r9", 110.5, ["z"]))
    ex = {e.item_id: e for e in _examples(j.tick(0.0))}
    assert set(ex) == {"a", "b"}  # c was scored but never shown
    assert ex["b"].label == 1 and ex["a"].label == 0
    assert ex["a"].features == {"item_id": "a", "x": 1.0}
    assert ex["a"].served_version == 3


def test_engagement_after_window_is_negative_and_events_before_log_are_kept(
    tmp_path: Path,
) -> None:
    j, feed = _joiner(tmp_path)
    # impression arrives before the feature-log record (different topics interleave)
    feed(_ev("r1", 100.1, "a", "impression"))
    feed(_log("r1", 100.0, ["a"]))
    feed(_ev("r1", 111.0, "a", "click"))  # too late: 111 > 100 + 10
    feed(_log("r9", 125.0, ["z"]), _ev("r9", 125.0, "z", "impression"))
    ex = _examples(j.tick(0.0))
    assert [(e.item_id, e.label) for e in ex] == [("a", 0)]


def test_request_without_feature_log_is_dropped_after_orphan_timeout(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path)
    feed(_ev("r1", 100.0, "a", "impression"))
    feed(_log("r9", 115.0, []), _ev("r9", 115.0, "z", "impression"))
    assert j.tick(0.0) == []
    assert j.state[0].get("r/r1") is not None  # still waiting for the log
    feed(_log("r8", 131.0, []), _ev("r8", 131.0, "z", "impression"))
    assert j.tick(0.0) == []
    j.commit({})
    assert j.state[0].get("r/r1") is None


def test_open_windows_survive_restart(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path)
    feed(
        _log("r1", 100.0, ["a"]),
        _ev("r1", 100.1, "a", "impression"),
        _ev("r1", 101.0, "a", "click"),
    )
    j.commit({(T.feature_log, 0): 1, (T.activity, 0): 3})
    j.close()
    j2 = Joiner(T, tmp_path, JoinerConfig(window_s=10.0, idle_lateness_s=None))
    starts = j2.assign([(T.feature_log, 0), (T.activity, 0)])
    assert starts == {(T.feature_log, 0): 1, (T.activity, 0): 3}
    j2.process(
        [
            Record(T.feature_log, 0, 1, b"u1", _log("r9", 120.0, ["z"])),
            Record(T.activity, 0, 3, b"u1", _ev("r9", 120.0, "z", "impression")),
        ]
    )
    ex = _examples(j2.tick(0.0))
    assert [(e.item_id, e.label) for e in ex] == [("a", 1)]


def test_wall_clock_closes_windows_when_event_time_stalls(tmp_path: Path) -> None:
    j = Joiner(T, tmp_path, JoinerConfig(window_s=10.0, idle_lateness_s=5.0))
    j.assign([(T.feature_log, 0), (T.activity, 0)])
    Feed(j)(_log("r1", 100.0, ["a"]), _ev("r1", 100.1, "a", "impression"))
    assert j.tick(112.0) == []  # 112 - 5 = 107 < 110
    assert len(j.tick(116.0)) == 1


def test_ads_head_counts_only_clicks(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path)
    log = _log("r1", 100.0, ["a", "b"])
    ads_log = FeatureLogRecord(
        request_id=log.request_id,
        user_id=log.user_id,
        surface="ads",
        ts=log.ts,
        model="ads",
        version=1,
        items=log.items,
    )
    feed(
        ads_log,
        _ev("r1", 100.1, "a", "impression"),
        _ev("r1", 100.1, "b", "impression"),
        _ev("r1", 101.0, "a", "like"),
        _ev("r1", 102.0, "b", "click"),
    )
    feed(_log("r9", 120.0, ["z"]), _ev("r9", 120.0, "z", "impression"))
    outputs = j.tick(0.0)
    assert {o.topic for o in outputs} == {T.training_examples("ads")}
    ex = {e.item_id: e.label for e in (decode(TrainingExample, o.value) for o in outputs)}
    assert ex == {"a": 0, "b": 1}  # a like is engagement, not a click
