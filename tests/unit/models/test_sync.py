"""Learners kept in step across ranks: sparse and dense rounds agree, touch what learning
changed, and sum every rank's examples."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.models import checks
from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.sync import MAX, SUM, SyncState, sync_rules
from streamlearn.models.zoo import create

SPEC = FeatureSpec(categorical=("user", "item"), numeric=("price",), hash_bits=10)


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, y = checks.make_stream(n, seed)
    learner = create("ftrl", SPEC)
    idx, val = learner.featuriser.transform_many(rows)
    return idx, val, np.asarray(y, dtype=np.float64)


def _round(states: list[SyncState], sparse: bool) -> None:
    if sparse:
        parts = [(s.touched(), s.rows(s.touched())) for s in states]
        for s in states:
            s.apply_rows(parts)
    else:
        bufs = [s.buffers() for s in states]
        deltas = sum(b[0] for b in bufs)
        maxima = np.maximum.reduce([b[1] for b in bufs])
        for s in states:
            s.apply(deltas.copy(), maxima.copy())


@pytest.mark.parametrize("name", ["ftrl", "fm"])
def test_sparse_and_dense_rounds_leave_every_rank_with_the_same_state(name: str) -> None:
    idx, val, y = _stream(600, 1)
    out = {}
    for sparse in (True, False):
        learners = [create(name, SPEC, seed=3) for _ in range(2)]
        states = [SyncState(learner) for learner in learners]
        for start in range(0, 600, 100):  # three rounds of 100 examples per rank
            for r, (learner, state) in enumerate(zip(learners, states, strict=True)):
                sel = slice(start + 50 * r, start + 50 * (r + 1))
                state.touch(idx[sel], val[sel])
                learner.predict_learn_featurised(idx[sel], val[sel], y[sel])
            _round(states, sparse)
        a, b = (learner.state_arrays() for learner in learners)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        out[sparse] = a
    for k in out[True]:  # equal up to rounding (fm's factors are float32)
        np.testing.assert_allclose(out[True][k], out[False][k], rtol=1e-6, atol=1e-8)


def test_a_round_sums_every_ranks_change_of_ftrl_accumulators() -> None:
    """With no example in common, n (a sum of squared gradients) after the round is the
    base plus each rank's own sum; scale the maximum of theirs."""
    idx, val, y = _stream(200, 2)
    learners = [create("ftrl", SPEC) for _ in range(2)]
    states = [SyncState(learner) for learner in learners]
    for r, (learner, state) in enumerate(zip(learners, states, strict=True)):
        sel = slice(100 * r, 100 * (r + 1))
        state.touch(idx[sel], val[sel])
        learner.predict_learn_featurised(idx[sel], val[sel], y[sel])
    n_each = [learner.state_arrays()["n"].copy() for learner in learners]
    scale_each = [learner.state_arrays()["scale"].copy() for learner in learners]
    _round(states, sparse=True)
    for learner in learners:
        np.testing.assert_allclose(learner.state_arrays()["n"], n_each[0] + n_each[1])
        np.testing.assert_array_equal(
            learner.state_arrays()["scale"], np.maximum(scale_each[0], scale_each[1])
        )


@pytest.mark.parametrize("name", ["ftrl", "fm"])
def test_learning_changes_only_the_rows_it_touches(name: str) -> None:
    idx, val, y = _stream(300, 4)
    learner = create(name, SPEC, seed=1)
    state = SyncState(learner)
    before = {k: a.copy() for k, a in learner.state_arrays().items()}
    state.touch(idx, val)
    learner.predict_learn_featurised(idx, val, y)
    touched = set(state.touched().tolist())
    for k, a in learner.state_arrays().items():
        changed = np.flatnonzero((a != before[k]).reshape(len(a), -1).any(axis=1))
        assert set(changed.tolist()) <= touched, k


def test_rules_cover_every_state_array_and_deep_has_none() -> None:
    assert sync_rules(create("ftrl", SPEC)) == {"z": SUM, "n": SUM, "scale": MAX}
    ads = create("ftrl", SPEC, negative_rate=0.25)  # the downsampled head: its inner's
    assert sync_rules(ads) == {"z": SUM, "n": SUM, "scale": MAX}
    assert set(sync_rules(create("fm", SPEC))) == set(create("fm", SPEC).state_arrays())
    with pytest.raises(ModelError, match="cannot be trained by several ranks"):
        sync_rules(create("river-lr", SPEC))
