"""The rollout's decisions on figures alone: promote, reject, keep, roll back."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.models.errors import ModelError
from streamlearn.models.rollout import Comparison, RolloutConfig, Watch


def _labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.beta(1, 6, n)
    return (rng.random(n) < truth).astype(float), truth


def test_a_better_candidate_is_promoted_a_worse_one_rejected() -> None:
    cfg = RolloutConfig(min_examples=3000, promote_margin=0.0)
    y, truth = _labels(4000, 1)
    noisy = np.clip(truth + np.random.default_rng(2).normal(0, 0.15, truth.size), 0.001, 0.999)
    good = Comparison(7)
    good.add(y[:2000], noisy[:2000], truth[:2000])
    assert good.decide(cfg) is None  # not enough examples yet
    good.add(y[2000:], noisy[2000:], truth[2000:])
    d = good.decide(cfg)
    assert d is not None and d.action == "promote"
    assert d.figures["candidate_ne"] < d.figures["production_ne"] and d.figures["examples"] == 4000
    bad = Comparison(8)
    bad.add(y, truth, np.random.default_rng(3).permutation(truth))  # scores of other requests
    d = bad.decide(cfg)
    assert d is not None and d.action == "reject" and d.figures["candidate"] == 8
    assert d.figures["candidate_ne"] > d.figures["production_ne"]
    restored = Comparison.from_dict(bad.to_dict())
    assert restored.figures() == bad.figures()


def test_a_promotion_that_regresses_is_rolled_back() -> None:
    cfg = RolloutConfig(watch_examples=2000, rollback_margin=0.02)
    y, truth = _labels(3000, 4)
    w = Watch(promoted=10, previous=9, since_version=12, reference_ne=0.80)
    served = np.array([10, 11, 12, 13])
    assert w.covers(served).tolist() == [True, False, True, True]
    w.served.update(y, np.full(y.size, 0.5))  # far worse than the reference
    d = w.decide(cfg)
    assert d is not None and d.action == "rollback" and d.figures["previous"] == 9
    ok = Watch(promoted=10, previous=9, since_version=12, reference_ne=10.0)
    ok.served.update(y, truth)
    d = ok.decide(cfg)
    assert d is not None and d.action == "keep"
    assert Watch.from_dict(w.to_dict()).to_dict() == w.to_dict()


def test_thresholds_are_checked() -> None:
    with pytest.raises(ModelError, match="min_examples"):
        RolloutConfig(min_examples=0)
