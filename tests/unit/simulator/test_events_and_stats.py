"""Behaviour, published events, bookkeeping and the log-shape measures; no broker."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.simulator.behaviour import Behaviour, Schedule, Shown, sample_engagements
from streamlearn.simulator.events import BAD_KINDS, activity_event, bad_event
from streamlearn.simulator.ranking import ExpectedCtr
from streamlearn.simulator.scoring import Scored
from streamlearn.simulator.shape import (
    ShapeTally,
    gap_cv,
    session_lengths,
    shape_of_events,
    top_share,
)
from streamlearn.simulator.stats import CtrTally, LatencyWindow, SimStats
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.errors import ContractError
from tests.example import ENGAGEMENT_TYPES, decode_event

SHOWN = Shown(user_id="u1", item_id="i2", request_id="r3", position=1, category="c4")


# -- behaviour ---------------------------------------------------------------------------
def test_engagements_follow_the_truth_with_capped_delays() -> None:
    rng = np.random.default_rng(0)
    b = Behaviour()
    n, ctr = 20_000, 0.1
    out = [sample_engagements(rng, b, ctr, 0.05) for _ in range(n)]
    clicks = sum(any(t == "click" for _, t in evs) for evs in out)
    assert clicks / n == pytest.approx(ctr, rel=0.1)
    delays = [d for evs in out for d, _ in evs]
    assert max(delays) <= b.max_delay_s
    assert np.mean(delays) == pytest.approx(b.mean_delay_s, rel=0.3)
    for evs in out:
        types = [t for _, t in evs]
        if "hide" in types:
            assert types == ["hide"]
        elif types:
            assert types[0] == "click"
            assert set(types) <= ENGAGEMENT_TYPES
            click_at = evs[0][0]
            assert all(d >= click_at for d, _ in evs)
    hides = sum(evs == [] or evs[0][1] == "hide" for evs in out if evs) / n
    assert 0.005 < hides < 0.04


def test_disliked_items_are_hidden_more() -> None:
    rng = np.random.default_rng(0)
    b = Behaviour(hide_rate=0.2)

    def hides(ctr: float) -> int:
        evs = (sample_engagements(rng, b, ctr, 0.05) for _ in range(5000))
        return sum(bool(e) and e[0][1] == "hide" for e in evs)

    assert hides(0.005) > hides(0.05) > hides(0.3)


def test_behaviour_validates() -> None:
    with pytest.raises(ValueError, match="mean_delay_s"):
        Behaviour(mean_delay_s=7.0, max_delay_s=6.0)


def test_schedule_pops_in_due_order_and_clears() -> None:
    s = Schedule()
    for due in (3.0, 1.0, 2.0, 1.0):
        s.add(due, "click", SHOWN)
    assert s.next_due() == 1.0
    assert [p.due for p in s.pop_due(2.0)] == [1.0, 1.0, 2.0]
    assert len(s) == 1
    assert s.clear() == 1
    assert s.next_due() is None


# -- events ------------------------------------------------------------------------------
def test_events_follow_the_contract_and_bad_ones_break_it() -> None:
    ev = decode_event(activity_event("e1", "click", SHOWN))
    assert (ev.type, ev.user_id, ev.request_id, ev.position) == ("click", "u1", "r3", 1)
    assert (ev.surface, ev.context) == ("feed", {"category": "c4"})
    ad = Shown("u1", "a7", "r4", 0, "c2", surface="ads")
    assert decode_event(activity_event("e2", "impression", ad)).surface == "ads"
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(60):
        kind, raw = bad_event(rng, f"b{i}", SHOWN)
        seen.add(kind)
        with pytest.raises(ContractError) as err:
            decode_event(raw)
        assert err.value.reason == kind
    assert seen == set(BAD_KINDS)


# -- bookkeeping -------------------------------------------------------------------------
def test_latency_window_is_exact_and_bounded() -> None:
    w = LatencyWindow(size=100)
    assert w.quantile(0.5) is None
    for x in range(1, 251):
        w.add(float(x))
    assert len(w) == 100
    assert w.quantile(0.5) == pytest.approx(np.quantile(np.arange(151, 251), 0.5))
    assert w.quantile(0.99) == pytest.approx(np.quantile(np.arange(151, 251), 0.99))


def test_ctr_tally_since_start_and_recent() -> None:
    t = CtrTally(recent_requests=2)
    assert t.since_start()["model"] is None
    t.add(3, 3, ExpectedCtr(model=1.0, random=0.5, oracle=1.0))
    t.add(3, 0, ExpectedCtr(model=0.0, random=0.1, oracle=0.2))
    t.add(3, 0, ExpectedCtr(model=0.0, random=0.1, oracle=0.2))
    assert t.since_start() == pytest.approx(
        {"model": 1 / 3, "model_expected": 1 / 3, "random": 0.7 / 3, "oracle": 1.4 / 3}
    )
    assert t.recent() == pytest.approx(
        {"model": 0.0, "model_expected": 0.0, "random": 0.1, "oracle": 0.2}
    )


def test_stats_snapshot_per_surface_with_feed_figures_on_top() -> None:
    s = SimStats()
    s.request("feed", Scored("served", [0.1], 0.002, "http://a", 1, 200))
    s.request("feed", Scored("served", [0.1], 0.004, "http://b", 2, 200))
    s.request("ads", Scored("http_error", replica="http://a", status=404))
    s.request("feed", Scored("unavailable"))
    for surface, type_ in (("feed", "impression"), ("feed", "impression"), ("feed", "click")):
        s.acked(surface, type_)
    for type_ in ("impression", "impression", "click"):
        s.acked("ads", type_)
    s.acked("feed", "hide")
    s.ranked("feed", True, 3, 1, ExpectedCtr(model=0.1, random=0.05, oracle=0.2))
    s.ranked("ads", True, 2, 1, ExpectedCtr(model=0.04, random=0.02, oracle=0.08))
    s.ranked("ads", False, 2, 0, ExpectedCtr(model=0.03, random=0.02, oracle=0.1))
    s.bad_acked("bad_json")
    s.dropped(2)
    snap = s.snapshot()
    assert snap["requests"] == 4 and snap["served"] == 2 and snap["serve_errors"] == 2
    assert snap["events_produced"] == 7 and snap["impressions"] == 4
    assert snap["engagements"] == 2 and snap["hides"] == 1
    assert snap["bad_events_produced"] == 1 and snap["engagements_dropped"] == 2
    assert snap["predict_p50_ms"] == pytest.approx(3.0)
    assert snap["failovers"] == 1
    assert snap["replica_calls"] == {
        "http://a": {"http_error": 1, "served": 1},
        "http://b": {"served": 1},
    }
    # the top-level CTRs are the feed's; each surface has its own
    assert snap["ctr_model_expected"] == pytest.approx(0.1)
    feed, ads = snap["surfaces"]["feed"], snap["surfaces"]["ads"]
    assert (feed["requests"], feed["served"], feed["impressions"], feed["clicks"]) == (3, 2, 2, 1)
    assert (ads["requests"], ads["served"], ads["impressions"], ads["clicks"]) == (1, 0, 2, 1)
    assert ads["requests_by_outcome"] == {"http_error": 1}
    assert ads["ctr_random"] == pytest.approx(0.02) and ads["ctr_oracle"] == pytest.approx(0.08)
    assert ads["predict_p99_ms"] is None
    # a request ranked at random (serving gave no scores) is counted apart
    assert ads["fallback_requests"] == 1 and ads["ctr_fallback"] == 0.0
    assert ads["ctr_fallback_oracle"] == pytest.approx(0.1)
    assert feed["fallback_requests"] == 0 and feed["ctr_fallback"] is None
    assert "log_shape" not in snap and "log_shape" in s.snapshot(shape=True)


# -- the log's shape ---------------------------------------------------------------------
def test_top_share() -> None:
    assert top_share([]) is None
    assert top_share([1] * 100) == pytest.approx(0.01)
    assert top_share([1] * 100, 0.1) == pytest.approx(0.1)
    assert top_share([91] + [1] * 9) == pytest.approx(0.91)  # the top 1% is at least one


def test_sessions_are_cut_at_silences_per_user() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 0])
    ts = np.array([0.0, 1.0, 2.5, 20.0, 1.0, 30.0, 21.0])
    assert sorted(session_lengths(users, ts, 5.0).tolist()) == [1, 1, 2, 3]
    assert session_lengths(np.array([], dtype=int), np.array([]), 5.0).size == 0


def test_gap_cv_tells_bursts_from_independent_requests() -> None:
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(1.0, 2000))
    bursts = np.cumsum(np.where(rng.random(2000) < 0.1, 30.0, 0.5) * rng.exponential(1.0, 2000))
    users = np.zeros(2000, dtype=int)
    assert gap_cv(users, poisson) == pytest.approx(1.0, abs=0.1)
    assert (gap_cv(users, bursts) or 0) > 2.0
    assert gap_cv(users[:3], poisson[:3]) is None


def test_shape_of_events_measures_what_was_published() -> None:
    events = [
        ActivityEvent(f"e{r}{pos}", "impression", t, user, item, "feed", f"r{r}", pos)
        for r, (user, t) in enumerate([("u1", 0.0), ("u1", 1.0), ("u1", 30.0), ("u2", 5.0)])
        for pos, item in enumerate(("i1", f"i{r + 2}"))
    ]
    events.append(ActivityEvent("c", "click", 31.0, "u1", "i4", "feed", "r2", 1))
    shape = shape_of_events(events, session_gap_s=5.0)
    assert shape["requests"] == 4 and shape["users"] == 2 and shape["sessions"] == 3
    assert shape["session_requests_max"] == 2
    assert shape["top1pct_items_impression_share"] == {"feed": pytest.approx(0.5)}
    assert shape["items_shown"] == {"feed": 5}
    assert shape["top1pct_users_event_share"] == pytest.approx(7 / 9, abs=1e-4)
    tally = ShapeTally(max_requests=2)
    for r in range(5):
        tally.request("u1", float(r))
    assert tally.snapshot()["requests"] == 2  # bounded: the newest requests only
