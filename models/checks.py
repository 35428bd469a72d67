"""The checks every learner must pass (river's ``utils.check_estimator`` in spirit).

Each check takes a factory ``make(seed) -> Learner`` for a fresh learner and raises
``AssertionError`` with a message on failure. :func:`yield_checks` lists them all;
``tests/unit/models/test_checks.py`` runs every check on every learner in the zoo.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Iterator

import numpy as np

from streamlearn.models.features import FeatureSpec
from streamlearn.models.protocol import Learner, Row
from streamlearn.models.snapshot import REQUIRED_METADATA
from streamlearn.models.state import sha256
from streamlearn.models.zoo import load_state

MakeLearner = Callable[[int], Learner]

#: A spec with every kind of slot, small enough for quick checks.
CHECK_SPEC = FeatureSpec(
    categorical=("user", "item", "surface"),
    numeric=("position", "price"),
    crosses=(("user", "item"),),
    hash_bits=12,
)


def make_stream(n: int, seed: int) -> tuple[list[Row], np.ndarray]:
    """Synthetic CTR rows over :data:`CHECK_SPEC` with a learnable signal."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n)
    items = rng.integers(0, 15, n)
    positions = rng.integers(0, 8, n)
    logit = -1.0 + 0.15 * (users % 7) - 0.25 * positions + np.where(items < 5, 1.0, -0.5)
    ys = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    rows: list[Row] = [
        {
            "user": f"u{u}",
            "item": int(i),
            "surface": "s1" if i % 2 else "s2",
            "position": int(p),
            "price": float(rng.gamma(2.0, 10.0)),
        }
        for u, i, p in zip(users, items, positions, strict=True)
    ]
    return rows, ys


def _train(learner: Learner, rows: list[Row], ys: np.ndarray, batch: int = 64) -> None:
    for s in range(0, len(rows), batch):
        learner.learn_many(rows[s : s + batch], ys[s : s + batch])


def _assert_probabilities(p: np.ndarray, n: int, what: str) -> None:
    assert isinstance(p, np.ndarray) and p.shape == (n,), (
        f"{what}: expected shape ({n},), got {getattr(p, 'shape', type(p))}"
    )
    assert p.dtype == np.float64, f"{what}: expected float64, got {p.dtype}"
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)), f"{what}: not probabilities"


def check_predict_before_learning(make: MakeLearner) -> None:
    """A fresh learner predicts valid probabilities."""
    learner = make(0)
    rows, _ = make_stream(10, 1)
    _assert_probabilities(learner.predict_proba_many(rows), 10, "fresh predict_proba_many")
    one = learner.predict_proba_one(rows[0])
    assert isinstance(one, float) and 0.0 <= one <= 1.0, f"fresh predict_proba_one gave {one!r}"
    assert learner.examples_seen == 0


def check_learns(make: MakeLearner) -> None:
    """Training on a learnable stream beats chance on held-out rows."""
    from streamlearn.models.metrics import exact_auc

    learner = make(0)
    rows, ys = make_stream(3000, 2)
    _train(learner, rows, ys)
    assert learner.examples_seen == 3000, (
        f"examples_seen: expected 3000, got {learner.examples_seen}"
    )
    test_rows, test_ys = make_stream(1000, 3)
    auc = exact_auc(test_ys, learner.predict_proba_many(test_rows))
    assert auc is not None and auc > 0.6, (
        f"held-out AUC after 3000 examples: expected > 0.6, got {auc}"
    )


def check_unseen_and_missing_features(make: MakeLearner) -> None:
    """Unseen values, missing fields, ``None``, bad types and extra keys never fail."""
    learner = make(0)
    rows, ys = make_stream(200, 4)
    _train(learner, rows, ys)
    odd: list[Row] = [
        {},
        {"user": "never-seen", "item": 10**9},
        {"user": None, "item": None, "position": None, "price": None},
        {"position": "not a number", "price": float("nan"), "surface": 3.5},
        {"unknown_field": "x", "price": float("inf")},
        {"user": "ü∂", "item": -1, "position": -5, "price": 1e30},
    ]
    _assert_probabilities(learner.predict_proba_many(odd), len(odd), "odd rows")
    learner.learn_many(odd, np.array([0, 1, 0, 1, 0, 1], dtype=np.float64))
    learner.learn_one({}, 1.0)
    _assert_probabilities(learner.predict_proba_many(odd), len(odd), "odd rows after learning")


def check_pickling(make: MakeLearner) -> None:
    """A pickled learner predicts the same and keeps learning the same."""
    learner = make(0)
    rows, ys = make_stream(600, 5)
    _train(learner, rows[:300], ys[:300])
    clone = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(clone.predict_proba_many(rows), learner.predict_proba_many(rows))
    _train(learner, rows[300:], ys[300:])
    _train(clone, rows[300:], ys[300:])
    np.testing.assert_allclose(
        clone.predict_proba_many(rows), learner.predict_proba_many(rows), atol=1e-12
    )
    assert clone.examples_seen == learner.examples_seen == 600


def check_state_roundtrip(make: MakeLearner) -> None:
    """The snapshot's data-only state rebuilds a learner that predicts and learns the same;
    a tampered or pickled state is refused."""
    from streamlearn.models.errors import SnapshotError

    learner = make(0)
    rows, ys = make_stream(800, 10)
    _train(learner, rows[:400], ys[:400])
    snap = learner.snapshot()
    assert snap.state[:2] == b"PK", "state must be an npz archive (data only), not a pickle"
    clone = load_state(snap.state, snap.metadata["state_sha256"])
    assert type(clone) is type(learner), f"state rebuilt a {type(clone)}, not {type(learner)}"
    assert clone.examples_seen == learner.examples_seen
    assert clone.snapshot().metadata["params"] == snap.metadata["params"]
    np.testing.assert_array_equal(clone.predict_proba_many(rows), learner.predict_proba_many(rows))
    _train(learner, rows[400:], ys[400:])
    _train(clone, rows[400:], ys[400:])
    np.testing.assert_allclose(
        clone.predict_proba_many(rows), learner.predict_proba_many(rows), atol=1e-9
    )
    assert clone.examples_seen == learner.examples_seen == 800
    tampered = bytearray(snap.state)
    tampered[len(tampered) // 2] ^= 0xFF
    for bad, digest in (
        (bytes(tampered), snap.metadata["state_sha256"]),
        (pickle.dumps(learner), sha256(pickle.dumps(learner))),
        (snap.state, None),
    ):
        try:
            load_state(bad, digest)
        except SnapshotError:
            continue
        raise AssertionError("a tampered, pickled or unverified state was accepted")


def check_determinism(make: MakeLearner) -> None:
    """Same seed, same data: identical predictions and identical ONNX bytes."""
    rows, ys = make_stream(500, 6)
    a, b = make(7), make(7)
    _train(a, rows, ys)
    _train(b, rows, ys)
    np.testing.assert_array_equal(a.predict_proba_many(rows), b.predict_proba_many(rows))
    assert a.snapshot().onnx == b.snapshot().onnx, "ONNX bytes differ between identical runs"


def check_inputs_not_mutated(make: MakeLearner) -> None:
    """Rows, labels and featurised arrays are left as they were."""
    learner = make(0)
    rows, ys = make_stream(100, 7)
    rows_before, ys_before = copy.deepcopy(rows), ys.copy()
    learner.learn_many(rows, ys)
    learner.predict_proba_many(rows)
    learner.learn_one(rows[0], float(ys[0]))
    learner.predict_proba_one(rows[0])
    assert rows == rows_before and np.array_equal(ys, ys_before), "raw inputs were mutated"
    idx, val = learner.featuriser.transform_many(rows)
    idx_before, val_before = idx.copy(), val.copy()
    learner.predict_learn_featurised(idx, val, ys)
    learner.learn_featurised(idx, val, ys)
    learner.predict_featurised(idx, val)
    assert np.array_equal(idx, idx_before) and np.array_equal(val, val_before), (
        "featurised inputs were mutated"
    )


def check_onnx_parity(make: MakeLearner) -> None:
    """onnxruntime on the snapshot equals the in-memory prediction within 1e-5."""
    import onnxruntime as ort

    learner = make(0)
    rows, ys = make_stream(2000, 8)
    _train(learner, rows, ys)
    snap = learner.snapshot()
    test_rows, _ = make_stream(500, 9)
    test_rows += [{}, {"user": None, "price": "bad"}, {"item": 10**12, "position": -3}]
    spec = FeatureSpec.from_dict(snap.metadata["feature_spec"])
    from streamlearn.models.features import Featuriser

    idx, val = Featuriser(spec).transform_many(test_rows)  # featurise as serving does
    session = ort.InferenceSession(snap.onnx, providers=["CPUExecutionProvider"])
    (onnx_p,) = session.run(["prob"], {"idx": idx, "val": val})
    assert onnx_p.shape == (len(test_rows),) and onnx_p.dtype == np.float32
    np.testing.assert_allclose(onnx_p, learner.predict_proba_many(test_rows), atol=1e-5, rtol=0)
    resumed = load_state(snap.state, snap.metadata["state_sha256"])
    np.testing.assert_array_equal(
        resumed.predict_proba_many(test_rows), learner.predict_proba_many(test_rows)
    )


def check_snapshot_metadata(make: MakeLearner) -> None:
    """Metadata is JSON-safe and carries the keys serving and trainers rely on."""
    learner = make(0)
    meta = learner.snapshot().metadata
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    assert not missing, f"snapshot metadata lacks {missing}"
    assert json.loads(json.dumps(meta)) == meta, "metadata is not JSON round-trippable"
    assert meta["inputs"] == ["idx", "val"] and meta["output"] == "prob"
    assert meta["state_format"] and len(meta["state_sha256"]) == 64
    assert FeatureSpec.from_dict(meta["feature_spec"]) == learner.featuriser.spec


def yield_checks() -> Iterator[Callable[[MakeLearner], None]]:
    """Every check, in a fixed order."""
    yield check_predict_before_learning
    yield check_learns
    yield check_unseen_and_missing_features
    yield check_pickling
    yield check_state_roundtrip
    yield check_determinism
    yield check_inputs_not_mutated
    yield check_onnx_parity
    yield check_snapshot_metadata
