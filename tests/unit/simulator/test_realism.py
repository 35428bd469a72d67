"""The simulator's logs look like real ones, and the hidden click models stay learnable.

Two minutes of traffic at 150 requests/s, 30% of them ads, ranked by FTRL learners that
learn from what they ranked in batches of 256 (the online trainer's default), measured
as an outside reader would (:mod:`streamlearn.simulator.shape`), next to a world with the old
simulator's assumptions (uniform candidate pools, independent requests).
``python bench/bench_simulator.py`` prints these figures.
"""

from __future__ import annotations

import pytest

from streamlearn.simulator import SessionParams, World, WorldParams
from streamlearn.simulator.inprocess import InProcessRun, run_inprocess

#: The old simulator: every item equally likely in a pool, requests independent.
UNIFORM = (
    WorldParams(popularity_exponent=0.0, activity_skew=1.5),
    SessionParams(mean_requests=1.0, length_exponent=0.0, min_away_s=0.0),
)


@pytest.fixture(scope="module")
def realistic() -> InProcessRun:
    return run_inprocess(World(7), params={"alpha": 0.1, "beta": 0.1})


@pytest.fixture(scope="module")
def uniform() -> InProcessRun:
    params, sessions = UNIFORM
    return run_inprocess(
        World(7, params=params), sessions=sessions, params={"alpha": 0.1, "beta": 0.1}
    )


def test_item_popularity_is_heavy_tailed(realistic: InProcessRun, uniform: InProcessRun) -> None:
    top1 = realistic.shape["top1pct_items_impression_share"]
    assert top1["feed"] >= 0.10
    assert top1["feed"] >= 2 * uniform.shape["top1pct_items_impression_share"]["feed"]
    assert realistic.shape["top10pct_items_impression_share"]["feed"] >= 0.4
    assert top1["ads"] >= 0.10


def test_users_come_in_sessions(realistic: InProcessRun, uniform: InProcessRun) -> None:
    s, u = realistic.shape, uniform.shape
    assert s["session_requests_p50"] >= 2 and s["session_requests_mean"] >= 4
    assert s["session_requests_p90"] >= 10 and s["single_request_sessions_share"] <= 0.4
    assert u["session_requests_p50"] == 1
    # bursts: a user's gaps vary far more than those of independent (Poisson) requests
    assert s["user_gap_cv"] >= 1.5
    assert u["user_gap_cv"] <= 1.2


def test_a_few_users_are_very_active(realistic: InProcessRun) -> None:
    assert realistic.shape["top1pct_users_event_share"] >= 0.05
    assert realistic.shape["top10pct_users_event_share"] >= 0.35


def test_the_hidden_click_models_stay_learnable(realistic: InProcessRun) -> None:
    auc, feed, ads = realistic.auc, realistic.ctr["feed"], realistic.ctr["ads"]
    assert auc["feed"] is not None and auc["feed"] >= 0.70
    assert feed["model"] and feed["random"] and feed["oracle"]
    assert feed["model"] >= 1.5 * feed["random"]
    assert feed["oracle"] > feed["model"]
    assert auc["ads"] is not None and auc["ads"] >= 0.60
    assert ads["model"] and ads["random"] and ads["model"] > ads["random"]
