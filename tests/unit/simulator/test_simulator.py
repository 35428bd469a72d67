"""The simulator's world, behaviour, ranking and bookkeeping; no broker needed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import msgspec
import numpy as np
import pytest

from models.features import FeatureSpec, Featuriser
from models.learners.ftrl import FTRL
from models.metrics import exact_auc
from simulator import World, WorldParams
from simulator.behaviour import Behaviour, Schedule, Shown, sample_engagements
from simulator.events import BAD_KINDS, activity_event, bad_event
from simulator.ranking import compare, ctr_table, rank
from simulator.scoring import ScoringClient
from simulator.stats import CtrTally, LatencyWindow, SimStats
from streams.contracts import ENGAGEMENT_TYPES, PredictionRequest, decode_event
from streams.errors import ContractError

SHOWN = Shown(user_id="u1", item_id="i2", request_id="r3", position=1, category="c4")


def _requests(world: World, n: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield world.sample_user(rng), world.sample_candidates(rng, 20)


# -- the world ---------------------------------------------------------------------------
def test_same_seed_same_world_after_drift_and_churn() -> None:
    a, b, c = World(3), World(3), World(4)
    for w in (a, b, c):
        w.advance_to(120.0)
    assert a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.affinity, b.affinity)
    np.testing.assert_array_equal(a.quality, b.quality)
    assert a.offset == b.offset
    assert not np.array_equal(a.affinity, c.affinity)
    ra, rb = np.random.default_rng(1), np.random.default_rng(1)
    assert [a.sample_user(ra) for _ in range(50)] == [b.sample_user(rb) for _ in range(50)]


def test_offset_calibrated_to_base_ctr_and_ctrs_in_range() -> None:
    world = World(0)
    rng = np.random.default_rng(5)
    users = [world.sample_user(rng) for _ in range(4000)]
    items = rng.integers(0, world.n_items, 4000)
    pos0 = np.array([world.true_ctr(u, i) for u, i in zip(users, items, strict=True)])
    assert pos0.mean() == pytest.approx(world.params.base_ctr, rel=0.15)
    assert ((pos0 > 0) & (pos0 < 1)).all()


def test_random_ctr_a_few_percent_oracle_well_above() -> None:
    world = World(1)
    random, oracle = [], []
    for user, cands in _requests(world, 500):
        e = compare(ctr_table(world, user, cands, 3), np.arange(3))
        assert e.oracle >= e.random - 1e-12
        random.append(e.random)
        oracle.append(e.oracle)
    assert 0.03 <= np.mean(random) <= 0.06
    assert np.mean(oracle) >= 2.5 * np.mean(random)
    assert np.mean(oracle) <= 0.25


def test_ranking_by_the_truth_is_the_oracle() -> None:
    world = World(2)
    for user, cands in _requests(world, 50):
        table = ctr_table(world, user, cands, 3)
        truth_order = rank(world.true_ctr(user, cands), 3)
        e = compare(table, truth_order)
        assert e.model == pytest.approx(e.oracle)
        worst = compare(table, rank(-world.true_ctr(user, cands), 3))
        assert worst.model <= e.random <= e.model


def test_position_bias_lowers_ctr() -> None:
    world = World(0)
    ctr = world.true_ctr(0, np.array([5, 5, 5]), np.arange(3))
    assert ctr[0] > ctr[1] > ctr[2]


def test_affinities_drift_but_keep_their_spread() -> None:
    world = World(0, params=WorldParams(drift_timescale_s=600.0))
    before = world.affinity.copy()
    world.advance_to(60.0)
    assert world.now == 60.0
    moved = np.abs(world.affinity - before).mean()
    assert 0.01 < moved < 0.5
    assert world.affinity.std() == pytest.approx(world.params.affinity_scale, rel=0.1)
    still = World(0, params=WorldParams(drift_timescale_s=0.0))
    still.advance_to(60.0)
    np.testing.assert_array_equal(still.affinity, World(0).affinity)


def test_items_churn_at_the_configured_rate() -> None:
    world = World(0, n_items=300, params=WorldParams(item_lifetime_s=100.0))
    first = set(world.item_ids)
    world.advance_to(50.0)
    assert world.n_items == 300
    assert len(set(world.item_ids)) == 300
    # every retired item is replaced at once: n_items / lifetime = 3 new items per second
    replaced = world.items_created - 300
    assert 110 < replaced < 190
    new = set(world.item_ids) - first
    assert 0.25 * 300 < len(new) <= replaced
    assert (world.expires_at > world.now).all()


def test_world_rejects_bad_sizes_and_params() -> None:
    with pytest.raises(ValueError, match="n_users"):
        World(0, n_users=0)
    with pytest.raises(ValueError, match="base_ctr"):
        WorldParams(base_ctr=1.5)


def test_a_hashed_lr_learns_the_world() -> None:
    """80 s of 150 requests/s, 3 shown each: the served features reach AUC > 0.70."""
    world = World(0)
    spec = FeatureSpec(
        categorical=("user_id", "item_id", "item_category"),
        crosses=(("user_id", "item_category"),),
        hash_bits=18,
    )
    fz, model = Featuriser(spec), FTRL(spec, alpha=0.2)
    rng = np.random.default_rng(9)
    ys, ps = [], []
    for second in range(80):
        world.advance_to(second)
        rows, ctrs = [], []
        for user, cands in _requests(world, 150, seed=second):
            ctrs.append(world.true_ctr(user, cands[:3], np.arange(3)))
            rows += [
                {
                    "user_id": world.user_ids[user],
                    "item_id": world.item_ids[s],
                    "item_category": world.category_name(s),
                }
                for s in cands[:3]
            ]
        y = (rng.random(len(rows)) < np.concatenate(ctrs)).astype(np.int64)
        idx, val = fz.transform_many(rows)
        ps.append(model.predict_encoded(idx, val))
        ys.append(y)
        model.learn_encoded(idx, val, y)
    auc = exact_auc(np.concatenate(ys[-30:]), np.concatenate(ps[-30:]))
    assert auc is not None and auc >= 0.70


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
    assert ev.context == {"category": "c4"}
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
    from simulator.ranking import ExpectedCtr

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


def test_stats_snapshot_counts() -> None:
    s = SimStats()
    s.request("served", 0.002)
    s.request("unavailable", None)
    for t in ("impression", "impression", "click", "hide"):
        s.acked(t)
    s.bad_acked("bad_json")
    s.dropped(2)
    snap = s.snapshot()
    assert snap["requests"] == 2 and snap["served"] == 1 and snap["serve_errors"] == 1
    assert snap["events_produced"] == 4 and snap["impressions"] == 2
    assert snap["engagements"] == 1 and snap["hides"] == 1
    assert snap["bad_events_produced"] == 1 and snap["engagements_dropped"] == 2
    assert snap["predict_p50_ms"] == pytest.approx(2.0)


# -- the serving client ------------------------------------------------------------------
class _Scorer(http.server.BaseHTTPRequestHandler):
    reply: ClassVar[dict[str, object]] = {}
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        req = msgspec.json.decode(body)
        out = dict(self.reply) or {
            "request_id": req["request_id"],
            "model": "feed",
            "version": 1,
            "scores": [float(len(c)) for c in req["candidates"]],
        }
        data = msgspec.json.encode(out)
        self.send_response(self.status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scorer() -> Iterator[tuple[str, type[_Scorer]]]:
    handler = type("Handler", (_Scorer,), {"reply": {}, "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_scoring_client_outcomes(scorer: tuple[str, type[_Scorer]]) -> None:
    url, handler = scorer
    req = PredictionRequest(request_id="r1", user_id="u1", surface="feed", candidates=["i1", "i22"])
    with ScoringClient(url, "feed") as client:
        ok = client.score(req)
        assert ok.outcome == "served" and ok.scores == [2.0, 3.0]
        assert ok.latency_s is not None and ok.latency_s > 0
        handler.status = 503
        assert client.score(req).outcome == "unavailable"
        handler.status = 404
        assert client.score(req).outcome == "http_error"
        handler.status = 200
        handler.reply = {"request_id": "r1", "model": "feed", "version": 1, "scores": [1.0]}
        bad = client.score(req)
        assert bad.outcome == "bad_reply" and bad.latency_s is None
    with ScoringClient("http://127.0.0.1:1", "feed") as down:
        assert down.score(req).outcome == "unavailable"
