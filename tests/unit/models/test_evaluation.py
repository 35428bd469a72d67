"""Per-version score tallies: exact NE and calibration, AUC within 1e-3, stored as data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamlearn.models.errors import ModelError
from streamlearn.models.evaluation import ScoreTally, VersionEvaluation
from streamlearn.models.metrics import ProgressiveMetrics, exact_auc


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 8, n)
    y = (rng.random(n) < p).astype(float)
    return y, p


def test_tally_agrees_with_the_progressive_metrics() -> None:
    y, p = _stream(20_000, 1)
    t = ScoreTally()
    for s in range(0, y.size, 3000):  # in chunks
        t.update(y[s : s + 3000], p[s : s + 3000])
    m = ProgressiveMetrics(window=y.size)
    m.update(y, p)
    exact = exact_auc(y, p)
    assert exact is not None and t.auc == pytest.approx(exact, abs=1e-3)
    assert t.ne == pytest.approx(m.ne, rel=1e-12)
    assert t.calibration == pytest.approx(m.calibration, rel=1e-12)
    assert t.logloss == pytest.approx(m.logloss, rel=1e-12)
    assert t.report()["count"] == 20_000


def test_round_trip_merge_and_undefined_figures() -> None:
    y, p = _stream(5000, 2)
    a, b = ScoreTally(), ScoreTally()
    a.update(y[:2000], p[:2000])
    b.update(y[2000:], p[2000:])
    back = ScoreTally.from_dict(json.loads(json.dumps(a.to_dict())))
    back.merge(b)
    whole = ScoreTally()
    whole.update(y, p)
    assert back.report() == pytest.approx(whole.report())
    empty = ScoreTally()
    assert empty.report() == {
        "count": 0, "positives": 0, "auc": None, "logloss": None, "ne": None,
        "calibration": None,
    }  # fmt: skip
    one_class = ScoreTally()
    one_class.update(np.zeros(3), np.full(3, 0.1))
    assert one_class.auc is None and one_class.ne is None and one_class.calibration is None
    with pytest.raises(ModelError, match="score tally"):
        ScoreTally.from_dict({"count": 1})
    with pytest.raises(ModelError, match="same length"):
        a.update(np.zeros(2), np.zeros(3))


def test_version_evaluation_groups_by_version_and_keeps_the_newest() -> None:
    ev = VersionEvaluation(keep=3)
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    p = np.array([0.9, 0.2, 0.6, 0.4, 0.1])
    ev.add("served", np.array([1, 1, 2, 2, 2]), y, p)
    assert ev.report(1)["served"]["count"] == 2 and ev.report(2)["served"]["auc"] == 1.0
    assert ev.take_changed() == [1, 2] and ev.take_changed() == []
    for v in (3, 4):
        ev.add("shadow", np.array([v]), y[:1], p[:1])
    assert list(ev.versions()) == [2, 3, 4]  # version 1 dropped: keep=3
    again = VersionEvaluation.from_dict(json.loads(json.dumps(ev.to_dict())), keep=3)
    assert again.report(2) == ev.report(2) and again.report(4) == ev.report(4)
    with pytest.raises(ModelError, match="traffic"):
        ev.tally(1, "nope")
