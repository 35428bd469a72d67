"""Batches safe under hot keys: sessions (one user 100 rows in a row) and Zipf-popular
items, learnt at batch 1000, never do worse than a constant predictor in any window, and
stay within 0.01 AUC of learning one example at a time (for ``deep``: micro-batches of
one, so its deep part too learns one example at a time)."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.models.features import FeatureSpec
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import create

N, WINDOW = 6000, 500


def sessions(seed: int = 0) -> tuple[list[dict[str, object]], np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.repeat(rng.integers(0, 5000, N // 100), 100)
    items = np.minimum(rng.zipf(1.3, N), 2000)
    user_bias = rng.normal(0, 1.0, 5000)
    logit = -1.5 + user_bias[users] + np.where(items <= 3, 1.5, -0.3)
    ys = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    rows = [{"user": f"u{u}", "item": f"i{i}"} for u, i in zip(users, items, strict=True)]
    return rows, ys


def progressive(name: str, batch: int, **params: object) -> tuple[np.ndarray, np.ndarray]:
    rows, ys = sessions()
    spec = FeatureSpec(categorical=("user", "item"), hash_bits=16)
    learner = create(name, spec, **params)
    idx, val = learner.featuriser.transform_many(rows)
    p = np.concatenate(
        [
            learner.predict_learn_featurised(
                idx[s : s + batch], val[s : s + batch], ys[s : s + batch]
            )
            for s in range(0, N, batch)
        ]
    )
    return p, ys


def logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


@pytest.mark.parametrize("name", ["ftrl", "fm", "deep"])
def test_sessions_at_batch_1000(name: str) -> None:
    p, ys = progressive(name, 1000)
    # the online constant predictor: the running positive rate of the examples before
    seen = np.concatenate([[0.5], np.cumsum(ys)[:-1] / np.arange(1, N)])
    for s in range(0, N, WINDOW):
        ours = logloss(ys[s : s + WINDOW], p[s : s + WINDOW]).mean()
        constant = logloss(ys[s : s + WINDOW], seen[s : s + WINDOW]).mean()
        assert ours < constant, f"{name}: window at {s}: log loss {ours:.4f} ≥ {constant:.4f}"
    one_params = {"micro_batch": 1} if name == "deep" else {}
    p1, _ = progressive(name, 1, **one_params)
    auc, auc1 = exact_auc(ys, p), exact_auc(ys, p1)
    assert auc is not None and auc1 is not None
    assert abs(auc - auc1) <= 0.01, f"{name}: AUC {auc:.4f} at batch 1000, {auc1:.4f} one at a time"
