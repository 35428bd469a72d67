"""Sessions: bursts of one user's requests, heavy users, deterministic virtual time."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest

from streamlearn.simulator import World
from streamlearn.simulator.sessions import SessionParams, Sessions, Visit


def _visits(seconds: float, params: SessionParams | None = None, seed: int = 0) -> list[Visit]:
    world = World(seed)
    sessions = Sessions(world.activity, 150.0, np.random.default_rng(seed), params)
    out = []
    while (v := sessions.next()).t <= seconds:
        out.append(v)
    return out


def test_same_seed_same_visits() -> None:
    assert _visits(30.0, seed=1) == _visits(30.0, seed=1)
    assert _visits(30.0, seed=1) != _visits(30.0, seed=2)


def test_requests_arrive_at_the_rate_in_time_order() -> None:
    visits = _visits(120.0)
    assert len(visits) / 120.0 == pytest.approx(150.0, rel=0.1)
    times = [v.t for v in visits]
    assert times == sorted(times)


def test_a_session_is_one_user_making_requests_a_second_or_so_apart() -> None:
    p = SessionParams()
    by_session: dict[int, list[Visit]] = defaultdict(list)
    for v in _visits(120.0, p):
        by_session[v.session].append(v)
    lengths = []
    for visits in by_session.values():
        assert len({v.user for v in visits}) == 1
        # sessions in progress at time 0 (after the warm-up) began before it
        first = visits[0].nth
        assert [v.nth for v in visits] == list(range(first, first + len(visits)))
        gaps = np.diff([v.t for v in visits])
        assert (gaps >= p.min_gap_s - 1e-9).all()
        lengths.append(len(visits))
    gaps = np.concatenate([np.diff([v.t for v in vs]) for vs in by_session.values()])
    assert np.mean(gaps) == pytest.approx(p.mean_gap_s, rel=0.1)
    assert np.mean(lengths) > 3 and max(lengths) > 30


def test_a_user_is_in_one_session_at_a_time_and_stays_away_after() -> None:
    p = SessionParams(min_away_s=5.0)
    spans: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    by_session: dict[int, list[Visit]] = defaultdict(list)
    for v in _visits(120.0, p):
        by_session[v.session].append(v)
    for sid, visits in by_session.items():
        spans[visits[0].user].append((visits[0].t, visits[-1].t, sid))
    for user_spans in spans.values():
        user_spans.sort()
        for (_, end, _), (start, _, _) in itertools.pairwise(user_spans):
            assert start >= end + p.min_away_s - 1e-9


def test_very_active_users_come_more_often_and_stay_longer() -> None:
    world = World(0)
    visits = _visits(120.0)
    per_user = Counter(v.user for v in visits)
    heavy = np.argsort(-world.activity)[:20]
    light = np.argsort(-world.activity)[1000:]
    by_session: dict[int, list[Visit]] = defaultdict(list)
    for v in visits:
        by_session[v.session].append(v)
    length = {vs[0].user: len(vs) for vs in by_session.values()}
    heavy_len = np.mean([length[u] for u in heavy if u in length])
    light_len = np.mean([length[u] for u in light if u in length])
    assert heavy_len > 3 * light_len
    assert sum(per_user[u] for u in heavy) > 0.05 * len(visits)  # 1% of users


def test_one_request_sessions_are_independent_requests() -> None:
    p = SessionParams(mean_requests=1.0, length_exponent=0.0, min_away_s=0.0)
    visits = _visits(60.0, p)
    assert all(v.nth == 0 for v in visits)
    assert len(visits) / 60.0 == pytest.approx(150.0, rel=0.1)
    assert len({v.session for v in visits}) == len(visits)


def test_session_params_validate() -> None:
    with pytest.raises(ValueError, match="mean_requests"):
        SessionParams(mean_requests=0.5)
    with pytest.raises(ValueError, match="length_exponent"):
        SessionParams(length_exponent=2.0)
    with pytest.raises(ValueError, match="rate"):
        Sessions(np.ones(3), 0.0, np.random.default_rng(0))
