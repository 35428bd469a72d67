"""Model heads: positives and the calibrated ads learner."""

from __future__ import annotations

import numpy as np

from streamlearn.models.definition import ModelDef
from streamlearn.models.features import FeatureSpec
from streamlearn.models.metrics import ProgressiveMetrics
from tests.example import CLICK, ENGAGEMENT


def test_heads_declare_their_positives() -> None:
    assert CLICK.positives == {"click"} and CLICK.negative_rate == 0.25
    assert {"click", "like", "share", "conversion"} == ENGAGEMENT.positives
    assert ENGAGEMENT.negative_rate is None


def test_ads_learner_is_downsampled_and_stays_calibrated() -> None:
    spec = FeatureSpec(categorical=("item",), hash_bits=12)
    rng = np.random.default_rng(3)
    items = rng.integers(0, 50, 40_000)
    rate = 0.02 + 0.1 * (items % 5) / 4  # true click rates 2%–12%
    y = (rng.random(items.size) < rate).astype(float)
    rows = [{"item": f"i{i}"} for i in items]
    ads = ModelDef("ads", CLICK, spec, "ftrl", {"alpha": 0.1}).create(seed=1)
    assert type(ads).__name__ == "Downsampled"
    m = ProgressiveMetrics(window=10_000)
    for b in range(0, len(rows), 1000):
        idx, val = ads.featuriser.transform_many(rows[b : b + 1000])
        m.update(y[b : b + 1000], ads.predict_learn_featurised(idx, val, y[b : b + 1000]))
    assert m.window_calibration is not None and abs(m.window_calibration - 1.0) < 0.1
