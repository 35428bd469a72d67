"""ADWIN (streamlearn.models.drift) against river's on the same streams: the same
detections at the same updates, the same window afterwards."""

from __future__ import annotations

import numpy as np
import pytest
from river.drift import ADWIN  # the reference (river is in the dev install: the [river] extra)

from streamlearn.models.drift import Adwin
from streamlearn.models.errors import ModelError


def _streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "stationary": rng.normal(0.5, 0.1, 20_000),
        "step": np.r_[rng.normal(0.5, 0.1, 5000), rng.normal(0.6, 0.1, 5000)],
        "bernoulli": np.r_[rng.binomial(1, 0.2, 5000), rng.binomial(1, 0.4, 5000)].astype(float),
        "ramp": 0.3 + np.linspace(0.0, 0.2, 10_000) + rng.normal(0.0, 0.05, 10_000),
        "log loss, up and back": np.r_[
            rng.exponential(0.3, 4000), rng.exponential(0.45, 4000), rng.exponential(0.3, 4000)
        ],
    }


@pytest.mark.parametrize("name", list(_streams()))
@pytest.mark.parametrize("delta", [0.002, 0.05])
def test_detects_what_river_detects(name: str, delta: float) -> None:
    xs = _streams()[name]
    ours, theirs = Adwin(delta=delta), ADWIN(delta=delta)
    ours_at, theirs_at = [], []
    for i, x in enumerate(xs.tolist()):
        if ours.update(x):
            ours_at.append(i)
        theirs.update(x)
        if theirs.drift_detected:
            theirs_at.append(i)
    assert ours_at == theirs_at
    assert ours.width == theirs.width
    assert ours.estimation == pytest.approx(theirs.estimation, rel=1e-9)
    assert ours.variance == pytest.approx(theirs.variance, rel=1e-6)
    if name == "stationary":
        assert ours.detections == 0
    else:
        assert ours.detections == len(ours_at) >= 1


def test_starts_over_after_a_detection() -> None:
    detector = Adwin(delta=0.05, clock=1)
    for _ in range(200):
        detector.update(0.0)
    while not detector.update(1.0):
        pass
    assert detector.drift_detected
    detector.update(1.0)
    assert not detector.drift_detected and detector.width == 1


def test_bad_parameters_raise() -> None:
    with pytest.raises(ModelError, match="delta"):
        Adwin(delta=0.0)
    with pytest.raises(ModelError, match="clock"):
        Adwin(clock=0)
