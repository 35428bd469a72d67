"""Traffic without I/O: requests from sessions on feed and ads, outcomes from the truth."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streamlearn.simulator import SessionParams, World, default_surfaces
from streamlearn.simulator.traffic import Traffic


def _traffic(seed: int = 0, ads_fraction: float = 0.3) -> Traffic:
    world = World(seed)
    return Traffic(world, default_surfaces(world), 150.0, "run", ads_fraction)


def _log(traffic: Traffic, n: int, scores: bool) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for _ in range(n):
        planned = traffic.plan()
        fake = [float(i) for i in range(len(planned.candidates))] if scores else None
        outcome = traffic.show(planned, fake)
        out.append(
            (
                planned.request.request_id,
                [s.item_id for s in outcome.shown],
                [f"{t}:{s.item_id}" for _, t, s in outcome.engagements],
            )
        )
    return out


def test_same_seed_same_requests_impressions_and_engagements() -> None:
    assert _log(_traffic(1), 300, True) == _log(_traffic(1), 300, True)
    assert _log(_traffic(1), 300, True) != _log(_traffic(2), 300, True)


def test_feed_and_ads_requests_in_the_configured_mix() -> None:
    traffic = _traffic(0, ads_fraction=0.3)
    surfaces: Counter[str] = Counter()
    times = []
    for _ in range(3000):
        planned = traffic.plan()
        req, surface = planned.request, planned.surface
        surfaces[req.surface] += 1
        times.append(planned.t)
        assert req.surface == surface.name and req.user_id.startswith("u")
        assert len(req.candidates) == surface.n_candidates == len(set(req.candidates))
        prefix = "a" if surface.name == "ads" else "i"
        assert all(c.startswith(prefix) for c in req.candidates)
        outcome = traffic.show(planned, None)
        assert not outcome.by_model  # ranked at random
        assert [s.position for s in outcome.shown] == list(range(surface.k_shown))
        assert {s.surface for s in outcome.shown} == {surface.name}
        assert {s.item_id for s in outcome.shown} <= set(req.candidates)
        if surface.name == "ads":
            assert {t for _, t, _ in outcome.engagements} <= {"click"}
    assert surfaces["ads"] / 3000 == pytest.approx(0.3, abs=0.03)
    assert times == sorted(times)
    feed_only = _traffic(0, ads_fraction=0.0)
    assert all(feed_only.plan().surface.name == "feed" for _ in range(500))


def test_scores_rank_the_shown_items() -> None:
    traffic = _traffic(3)
    for _ in range(200):
        planned = traffic.plan()
        scores = np.random.default_rng(0).random(len(planned.candidates))
        outcome = traffic.show(planned, scores.tolist())
        best = np.argsort(-scores)[: planned.surface.k_shown]
        ids = planned.request.candidates
        assert [s.item_id for s in outcome.shown] == [ids[i] for i in best]
        assert outcome.by_model
        assert outcome.expected.oracle >= outcome.expected.model - 1e-12


def test_traffic_validates() -> None:
    world = World(0)
    feed, _ = default_surfaces(world)
    with pytest.raises(ValueError, match="ads surface"):
        Traffic(world, [feed], 150.0, "r", ads_fraction=0.5)
    with pytest.raises(ValueError, match="ads_fraction"):
        Traffic(world, default_surfaces(world), 150.0, "r", ads_fraction=1.5)
    Traffic(world, [feed], 150.0, "r", 0.0, SessionParams(mean_requests=1.0))
