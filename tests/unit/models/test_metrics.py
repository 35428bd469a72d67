import math

import numpy as np
import pytest

from streamlearn.models.errors import ModelError
from streamlearn.models.metrics import ProgressiveMetrics, exact_auc


def pairwise_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_exact_auc_handles_ties() -> None:
    y = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    p = np.array([0.1, 0.1, 0.5, 0.7, 0.5, 0.2])
    assert exact_auc(y, p) == pytest.approx(pairwise_auc(y, p))
    assert exact_auc(np.zeros(3), np.ones(3)) is None


def test_overall_auc_is_near_exact_for_clustered_ctr_scores() -> None:
    rng = np.random.default_rng(0)
    m = ProgressiveMetrics(window=1000)
    p = rng.beta(1, 40, 6000)  # CTR-like scores bunched near 0.02
    y = (rng.random(6000) < p * 1.5).astype(float)
    for s in range(0, 6000, 700):
        m.update(y[s : s + 700], p[s : s + 700])
    assert m.count == 6000
    assert m.auc == pytest.approx(pairwise_auc(y, p), abs=1e-3)
    assert m.window_count == 1000
    assert m.window_auc == pytest.approx(pairwise_auc(y[-1000:], p[-1000:]), abs=1e-12)


def test_logloss_ne_calibration() -> None:
    m = ProgressiveMetrics(window=2)
    y = np.array([1.0, 0.0, 0.0, 0.0])
    p = np.array([0.5, 0.5, 0.25, 0.25])
    m.update(y, p)
    ll = -(math.log(0.5) * 2 + math.log(0.75) * 2) / 4
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert m.logloss == pytest.approx(ll)
    assert m.ne == pytest.approx(ll / h)
    assert m.calibration == pytest.approx((1.5 / 4) / 0.25)
    assert m.window_logloss == pytest.approx(-math.log(0.75))
    assert m.window_calibration is None  # no positives in the last two
    assert m.window_ne is None


def test_undefined_metrics_are_none() -> None:
    m = ProgressiveMetrics()
    assert m.report()["auc"] is None and m.report()["logloss"] is None
    m.update(np.zeros(5), np.full(5, 0.1))
    r = m.report()
    assert r["auc"] is None and r["ne"] is None and r["calibration"] is None
    assert r["logloss"] == pytest.approx(-math.log(0.9))


def test_bad_updates_raise() -> None:
    m = ProgressiveMetrics()
    with pytest.raises(ModelError, match="same length"):
        m.update(np.zeros(2), np.zeros(3))
    with pytest.raises(ModelError, match="0 or 1"):
        m.update(np.array([2.0]), np.array([0.5]))
    with pytest.raises(ModelError, match="probabilities"):
        m.update(np.array([1.0]), np.array([np.nan]))


def test_adwin_flags_a_jump_in_loss() -> None:
    rng = np.random.default_rng(5)
    m = ProgressiveMetrics(drift_chunk=50)
    fired_before = False
    for _ in range(40):  # a good model
        y = (rng.random(500) < 0.5).astype(float)
        fired_before |= m.update(y, np.where(y > 0, 0.8, 0.2))
    assert not fired_before and m.drifts == 0
    fired_after = False
    for _ in range(10):  # the world flips
        y = (rng.random(500) < 0.5).astype(float)
        fired_after |= m.update(y, np.where(y > 0, 0.2, 0.8))
    assert fired_after and m.drifts >= 1 and m.last_drift_at is not None
    assert m.last_drift_at > 20_000
