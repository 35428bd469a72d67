import math

import numpy as np
import pytest

from streamlearn.models.errors import FeatureError, ModelError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners.ftrl import FTRL
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import available, create

SPEC = FeatureSpec(categorical=("a", "b"), numeric=("x",), hash_bits=10)


def reference_ftrl(rows, ys, alpha, beta, l1, l2, normalize=False):  # type: ignore[no-untyped-def]
    """Sequential per-example FTRL-Proximal, straight from McMahan et al. (2013), Alg. 1;
    with ``normalize``, each coordinate's value divided by the largest |value| seen so far."""
    z: dict[int, float] = {}
    n: dict[int, float] = {}
    scale: dict[int, float] = {}
    preds = []
    for (idx, val), y in zip(rows, ys, strict=True):
        if normalize:
            for i, v in zip(idx, val, strict=True):
                scale[i] = max(scale.get(i, 0.0), abs(v))
            val = [v / scale[i] if scale[i] else 0.0 for i, v in zip(idx, val, strict=True)]
        w = {}
        for i in idx:
            zi, ni = z.get(i, 0.0), n.get(i, 0.0)
            w[i] = (
                0.0
                if abs(zi) <= l1
                else -(zi - math.copysign(l1, zi)) / ((beta + math.sqrt(ni)) / alpha + l2)
            )
        p = 1 / (1 + math.exp(-sum(w[i] * v for i, v in zip(idx, val, strict=True))))
        preds.append(p)
        for i, v in zip(idx, val, strict=True):
            g = (p - y) * v
            ni = n.get(i, 0.0)
            sigma = (math.sqrt(ni + g * g) - math.sqrt(ni)) / alpha
            z[i] = z.get(i, 0.0) + g - sigma * w[i]
            n[i] = ni + g * g
    return preds


@pytest.mark.parametrize("batch", [1, 7, 300])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("l1", [0.0, 0.5])
def test_any_batch_size_matches_the_sequential_reference(
    l1: float, normalize: bool, batch: int
) -> None:
    rng = np.random.default_rng(3)
    m = FTRL(SPEC, alpha=0.3, beta=1.0, l1=l1, l2=0.5, normalize=normalize)
    rows = [
        {"a": f"a{rng.integers(5)}", "b": f"b{rng.integers(7)}", "x": float(rng.normal()) * 50}
        for _ in range(300)
    ]
    ys = (rng.random(300) < 0.3).astype(float)
    idx, val = m.featuriser.transform_many(rows)
    assert all(len(set(r)) == len(r) for r in idx.tolist())  # no collisions in this spec
    got = np.concatenate(
        [
            m.predict_learn_featurised(idx[i : i + batch], val[i : i + batch], ys[i : i + batch])
            for i in range(0, 300, batch)
        ]
    )
    want = reference_ftrl(
        [(r.tolist(), v.astype(np.float64).tolist()) for r, v in zip(idx, val, strict=True)],
        ys.tolist(),
        0.3,
        1.0,
        l1,
        0.5,
        normalize,
    )
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert m.examples_seen == 300


@pytest.mark.parametrize("name", ["ftrl", "fm"])
def test_batch_size_only_chunks_the_work(name: str) -> None:
    """One user 100 rows in a row, Zipf items: batch 1000 learns exactly as batch 1."""
    rng = np.random.default_rng(5)
    n = 3000
    users = np.repeat(rng.integers(0, 1000, n // 100), 100)
    items = np.minimum(rng.zipf(1.3, n), 500)
    ys = (rng.random(n) < np.where(items < 3, 0.5, 0.1)).astype(float)
    spec = FeatureSpec(categorical=("u", "i"), crosses=(("u", "i"),), hash_bits=14)
    one, big = create(name, spec), create(name, spec)
    idx, val = one.featuriser.transform_many(
        [{"u": str(u), "i": str(i)} for u, i in zip(users, items, strict=True)]
    )
    p1 = np.concatenate(
        [
            one.predict_learn_featurised(idx[s : s + 1], val[s : s + 1], ys[s : s + 1])
            for s in range(n)
        ]
    )
    p1000 = np.concatenate(
        [
            big.predict_learn_featurised(idx[s : s + 1000], val[s : s + 1000], ys[s : s + 1000])
            for s in range(0, n, 1000)
        ]
    )
    np.testing.assert_array_equal(p1, p1000)


@pytest.mark.parametrize("name", ["ftrl", "fm"])
def test_unscaled_numbers_need_no_tuning(name: str) -> None:
    """A year and a count in the millions, raw (no log): the learner still beats the
    constant predictor, thanks to per-coordinate normalisation."""
    rng = np.random.default_rng(6)
    n = 5000
    year = rng.integers(1990, 2010, n).astype(float)
    count = rng.lognormal(10, 2, n)
    logit = (year - 2000) * 0.2 + (np.log(count) - 10) * 0.5
    ys = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    spec = FeatureSpec(numeric=("year", "count"), numeric_transform="identity", hash_bits=10)
    m = create(name, spec)
    idx, val = m.featuriser.transform_many(
        [{"year": y, "count": c} for y, c in zip(year, count, strict=True)]
    )
    p = np.concatenate(
        [
            m.predict_learn_featurised(idx[s : s + 500], val[s : s + 500], ys[s : s + 500])
            for s in range(0, n, 500)
        ]
    )
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    loss = -(ys * np.log(pc) + (1 - ys) * np.log(1 - pc)).mean()
    base = ys.mean()
    constant = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    assert loss < constant, (loss, constant)
    assert np.all(np.isfinite(m.predict_featurised(idx, val)))


def test_l1_gives_sparse_weights() -> None:
    rng = np.random.default_rng(0)
    rows = [{"a": f"a{i}"} for i in rng.integers(0, 500, 3000)]
    ys = rng.random(3000) < 0.5
    dense = FTRL(SPEC, l1=0.0)
    sparse = FTRL(SPEC, l1=2.0)
    for m in (dense, sparse):
        m.learn_many(rows, ys)
    assert np.count_nonzero(sparse.weights()) < np.count_nonzero(dense.weights()) / 2


def test_learns_a_signal_in_mini_batches() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    a = rng.integers(0, 50, n)
    ys = (rng.random(n) < np.where(a < 10, 0.6, 0.05)).astype(float)
    m = create("ftrl", SPEC, alpha=0.1)
    idx, val = m.featuriser.transform_many([{"a": str(v)} for v in a])
    preds = np.concatenate(
        [
            m.predict_learn_featurised(idx[s : s + 1000], val[s : s + 1000], ys[s : s + 1000])
            for s in range(0, n, 1000)
        ]
    )
    auc = exact_auc(ys[n // 2 :], preds[n // 2 :])
    assert auc is not None and auc > 0.8  # Bayes-optimal AUC here is 0.827
    # Calibrated enough: mean prediction near the base rate.
    assert abs(preds[n // 2 :].mean() - ys.mean()) < 0.02


def test_learn_featurised_equals_predict_learn_featurised() -> None:
    rng = np.random.default_rng(2)
    rows = [{"a": str(v), "x": float(v)} for v in rng.integers(0, 30, 500)]
    ys = rng.random(500) < 0.3
    m1, m2 = FTRL(SPEC), FTRL(SPEC)
    idx, val = m1.featuriser.transform_many(rows)
    before = m1.predict_featurised(idx, val)
    m1.learn_featurised(idx, val, ys)
    p = m2.predict_learn_featurised(idx, val, ys)
    assert p[0] == before[0] and not np.array_equal(p, before)  # each row scored in turn
    np.testing.assert_array_equal(m1.predict_featurised(idx, val), m2.predict_featurised(idx, val))


def test_learns_within_the_first_batch() -> None:
    rng = np.random.default_rng(4)
    ys = (rng.random(2000) < 0.1).astype(float)
    m = FTRL(SPEC)
    idx, val = m.featuriser.transform_many([{}] * 2000)
    p = m.predict_learn_featurised(idx, val, ys)
    assert p[0] == 0.5 and p[1] != 0.5  # each example is scored by the model before it
    assert abs(p[1000:].mean() - 0.1) < 0.05  # later chunks already know the base rate
    assert m.examples_seen == 2000


def test_bad_featurised_inputs_and_labels() -> None:
    m = FTRL(SPEC)
    with pytest.raises(FeatureError, match="shape"):
        m.predict_featurised(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32))
    with pytest.raises(FeatureError, match="indices"):
        m.predict_featurised(np.full((1, 4), SPEC.dim, np.int64), np.zeros((1, 4), np.float32))
    idx, val = m.featuriser.transform_many([{}, {}])
    with pytest.raises(FeatureError, match="0 or 1"):
        m.learn_featurised(idx, val, np.array([0.0, 2.0]))
    with pytest.raises(FeatureError, match="expected 2 labels"):
        m.learn_featurised(idx, val, np.array([0.0]))


def test_zoo() -> None:
    assert "ftrl" in available()
    with pytest.raises(ModelError, match="must be one of"):
        create("nope", SPEC)
    with pytest.raises(ModelError, match="alpha"):
        create("ftrl", SPEC, alpah=0.1)
