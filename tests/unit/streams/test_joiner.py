"""Joiner logic without a broker: label windows, late clicks, orphans, unshown items."""

from __future__ import annotations

from pathlib import Path

from streamlearn.streams.contracts import (
    ActivityEvent,
    FeatureLogRecord,
    ServedItem,
    TrainingExample,
    decode,
)
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.joiner import Joiner, JoinerConfig
from streamlearn.streams.runtime.processor import Output, Record
from streamlearn.streams.testing.memory import MemoryBroker
from tests.example import CATALOG, MODELS

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

    def __call__(self, *values: object) -> list[Output]:
        """Process ``values`` as one batch; returns its outputs (positives at once)."""
        recs = []
        for v in values:
            topic = T.feature_log if isinstance(v, FeatureLogRecord) else T.activity
            recs.append(Record(topic, 0, self.offset, b"u1", v))
            self.offset += 1
        out = self.j.process(recs)
        if not self.j.config.positives_at_once:
            assert out == []
        return out


def _joiner(tmp_path: Path, positives_at_once: bool = False) -> tuple[Joiner, Feed]:
    config = JoinerConfig(
        window_s=10.0,
        orphan_timeout_s=30.0,
        idle_lateness_s=None,
        positives_at_once=positives_at_once,
    )
    j = Joiner(T, tmp_path, CATALOG, MODELS, config)
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
    j2 = Joiner(
        T,
        tmp_path,
        CATALOG,
        MODELS,
        JoinerConfig(window_s=10.0, idle_lateness_s=None, positives_at_once=False),
    )
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
    j = Joiner(
        T,
        tmp_path,
        CATALOG,
        MODELS,
        JoinerConfig(window_s=10.0, idle_lateness_s=5.0, positives_at_once=False),
    )
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


def _close_all(feed: Feed, j: Joiner, ts: float) -> list[TrainingExample]:
    """Move both topics' event time to ``ts`` and close every window before it."""
    feed(_log("r-close", ts, ["z"]), _ev("r-close", ts, "z", "impression"))
    return _examples(j.tick(0.0))


def test_positives_at_once_come_before_the_window_closes_and_once(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path, positives_at_once=True)
    # the click comes before the feature-log record and the impression: nothing yet
    assert feed(_ev("r1", 101.0, "b", "click")) == []
    assert feed(_log("r1", 100.0, ["a", "b", "c", "d"])) == []
    now = _examples(feed(_ev("r1", 100.1, "a", "impression"), _ev("r1", 100.1, "b", "impression")))
    assert [(e.item_id, e.label, e.label_ts) for e in now] == [("b", 1, 101.0)]
    # a later engagement of the same item, or one of an unshown item, emits nothing
    assert feed(_ev("r1", 102.0, "b", "like"), _ev("r1", 103.0, "c", "click")) == []
    # an engagement after the window is not a positive, at once or at the close
    feed(_ev("r1", 100.2, "d", "impression"))
    assert feed(_ev("r1", 110.5, "d", "click")) == []
    late = _examples(feed(_ev("r2", 100.2, "x", "impression"), _log("r2", 100.0, ["x"])))
    assert late == []
    closed = _close_all(feed, j, 130.0)
    # the close emits the negatives only; b is not emitted twice
    got = sorted((e.request_id, e.item_id, e.label) for e in closed)
    assert got == [("r1", "a", 0), ("r1", "d", 0), ("r2", "x", 0)]
    assert all(e.label_ts is None for e in closed)


def test_positives_at_once_give_the_examples_of_the_window(tmp_path: Path) -> None:
    """The same records give the same examples (and labels) whenever positives are
    emitted: only the time they come at differs."""
    records = [
        _log("r1", 100.0, ["a", "b"]),
        _ev("r1", 100.1, "a", "impression"),
        _ev("r1", 100.1, "b", "impression"),
        _ev("r1", 104.0, "a", "share"),
        _ev("r1", 105.0, "b", "hide"),
        _log("r2", 101.0, ["c"]),
        _ev("r2", 101.1, "c", "impression"),
        _ev("r2", 109.0, "c", "conversion"),
    ]
    got = {}
    for at_once in (False, True):
        j, feed = _joiner(tmp_path / str(at_once), positives_at_once=at_once)
        early = [_examples(feed(r)) for r in records]
        examples = [e for batch in early for e in batch] + _close_all(feed, j, 130.0)
        got[at_once] = sorted(
            (e.request_id, e.item_id, e.label, e.label_ts)
            for e in examples
            if e.request_id != "r-close"
        )
        if at_once:
            assert [e.item_id for batch in early for e in batch] == ["a", "c"]
    assert (
        got[True]
        == got[False]
        == [
            ("r1", "a", 1, 104.0),
            ("r1", "b", 0, None),
            ("r2", "c", 1, 109.0),
        ]
    )


def test_an_emitted_positive_is_not_emitted_again_after_a_restart(tmp_path: Path) -> None:
    j, feed = _joiner(tmp_path, positives_at_once=True)
    out = feed(
        _log("r1", 100.0, ["a", "b"]),
        _ev("r1", 100.1, "a", "impression"),
        _ev("r1", 100.1, "b", "impression"),
        _ev("r1", 101.0, "a", "click"),
    )
    assert [(e.item_id, e.label) for e in _examples(out)] == [("a", 1)]
    j.commit({(T.feature_log, 0): 1, (T.activity, 0): 4})
    j.close()
    config = JoinerConfig(window_s=10.0, idle_lateness_s=None, positives_at_once=True)
    j2 = Joiner(T, tmp_path, CATALOG, MODELS, config)
    j2.assign([(T.feature_log, 0), (T.activity, 0)])
    feed2 = Feed(j2)
    feed2.offset = 4
    assert feed2(_ev("r1", 102.0, "a", "like")) == []
    assert [(e.item_id, e.label) for e in _close_all(feed2, j2, 130.0)] == [("b", 0)]


def test_a_replay_comes_out_in_event_time_order_across_partitions(tmp_path: Path) -> None:
    """A replayed log (no serving): partition 0 read to its end, partition 1 only to t=200:
    what comes out is in event-time order across the partitions, and partition 0 waits
    for partition 1 while partition 1's event time moves (not its whole log first, as the
    reads happened to go); once both have stalled, each closes its own last windows."""
    broker = MemoryBroker(partitions=2)
    broker.create_topics([T.features, *(T.training_examples(m) for m in MODELS.names)])
    config = JoinerConfig(window_s=10.0, orphan_timeout_s=30.0, idle_lateness_s=5.0)
    j = Joiner(T, tmp_path, CATALOG, MODELS, config, cluster=broker)
    j.assign([(t, p) for t in (T.activity, T.feature_log) for p in (0, 1)])

    def shown(p: int, i: int, ts: float) -> Record:
        return Record(T.activity, p, i, b"u1", _ev(f"{p}-{i}", ts, f"i{p}", "impression"))

    j.process([shown(0, i, 10.0 * i) for i in range(101)])
    j.process([shown(1, i, 10.0 * i + 5) for i in range(21)])
    now = 2e9  # the log is far behind the wall clock
    assert j.tick(now) == []  # no feature-log yet: waits idle_lateness_s
    out = _examples(j.tick(now + 5.5))
    times = [e.ts for e in out]
    assert times == sorted(times) and not any(e.served for e in out)
    assert {e.item_id for e in out} == {"i0", "i1"}
    assert max(times) <= 205.0 - 30.0  # partition 1's event time holds partition 0's
    j.process([shown(1, 21, 505.0)])  # partition 1 reads on: partition 0 follows it
    later = _examples(j.tick(now + 7))
    assert min(e.ts for e in later) > max(times) and max(e.ts for e in later) <= 475.0
    # both stalled: partition 0 closes its log's last windows, not held by partition 1
    last = _examples(j.tick(now + 20))
    assert max(e.ts for e in last if e.item_id == "i0") >= 970.0
