"""Learners kept in step across ranks: sparse and dense rounds agree, touch what learning
changed, and sum every rank's examples."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.models import checks
from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.sync import MAX, ROOT, SUM, SyncState, sync_rules
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
        changed = sum(b[2] for b in bufs)
        for s in states:
            s.apply(deltas.copy(), maxima.copy(), changed.copy())


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


def test_a_round_combines_shared_coordinates_by_each_arrays_rule() -> None:
    """After a round from an empty model: ``n`` (squared gradients) holds the sum of the
    ranks' ``n``; ``z`` the sum over the root of the ranks that changed a coordinate (a
    coordinate one rank learned keeps that rank's ``z`` whole); scale the maximum."""
    idx, val, y = _stream(200, 2)
    learners = [create("ftrl", SPEC) for _ in range(2)]
    states = [SyncState(learner) for learner in learners]
    for r, (learner, state) in enumerate(zip(learners, states, strict=True)):
        sel = slice(100 * r, 100 * (r + 1))
        state.touch(idx[sel], val[sel])
        learner.predict_learn_featurised(idx[sel], val[sel], y[sel])
    each = [{k: a.copy() for k, a in learner.state_arrays().items()} for learner in learners]
    touched = [set(s.touched().tolist()) for s in states]
    both = np.array(sorted(touched[0] & touched[1]), dtype=int)
    only0 = np.array(sorted(touched[0] - touched[1]), dtype=int)
    assert len(both) and len(only0)
    _round(states, sparse=True)
    for learner in learners:
        got = learner.state_arrays()
        np.testing.assert_allclose(got["n"][both], each[0]["n"][both] + each[1]["n"][both])
        np.testing.assert_allclose(
            got["z"][both], (each[0]["z"][both] + each[1]["z"][both]) / np.sqrt(2)
        )
        for k in ("z", "n"):
            np.testing.assert_allclose(got[k][only0], each[0][k][only0])
        np.testing.assert_array_equal(got["scale"], np.maximum(each[0]["scale"], each[1]["scale"]))


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
    assert sync_rules(create("ftrl", SPEC)) == {"z": ROOT, "n": SUM, "scale": MAX}
    ads = create("ftrl", SPEC, negative_rate=0.25)  # the downsampled head: its inner's
    assert sync_rules(ads) == {"z": ROOT, "n": SUM, "scale": MAX}
    assert set(sync_rules(create("fm", SPEC))) == set(create("fm", SPEC).state_arrays())
    with pytest.raises(ModelError, match="cannot be trained by several ranks"):
        sync_rules(create("river-lr", SPEC))
