"""ONNX parity: the graph a version serves must score what the learner it came from scores.

Every publish path (the online trainer, offline training, the retrain flow) runs the
snapshot's graph in onnxruntime on a sample of real rows, featurised as serving
featurises them, and compares it with the in-memory learner; a version whose largest
difference is above :data:`PARITY_ATOL` is never served (the online trainer does not
publish it, offline training fails). No version is published on an empty sample. The
one exception to real rows is a model's very first online version, published before any
request was served so that serving has something to answer with: no real row exists yet,
so it is checked on rows made from its feature spec (:func:`spec_rows`; its learner has
learned nothing). onnxruntime is imported when a check runs, so importing this module
costs nothing.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from streamlearn.models.errors import ParityError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.protocol import Learner
from streamlearn.models.snapshot import Snapshot

#: Largest |onnxruntime − in-memory| probability a published version may show.
PARITY_ATOL: Final = 1e-5
#: Rows a check runs on (the newest learned, or a holdout's first).
PARITY_ROWS: Final = 256


def spec_rows(spec: FeatureSpec, n: int = PARITY_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` raw rows made from ``spec``: every categorical feature a value among a few,
    every numeric one a non-negative number (some rows leave a feature out, as real rows
    may). For the one version checked before any real row exists (module docstring)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {}
        for name in spec.categorical:
            if rng.random() < 0.9:
                row[name] = f"{name}-{int(rng.integers(0, 64))}"
        for name in spec.numeric:
            if rng.random() < 0.9:
                row[name] = float(rng.exponential(10.0)) if i % 2 else int(rng.integers(0, 1000))
        rows.append(row)
    return rows


def onnx_parity(
    snapshot: Snapshot,
    learner: Learner,
    idx: np.ndarray,
    val: np.ndarray,
    atol: float = PARITY_ATOL,
) -> float:
    """The largest |onnxruntime − learner| over the featurised rows ``(idx, val)``.

    Raises :class:`ParityError` above ``atol`` (or when the graph cannot run, gives the
    wrong shape, or there is no row to check it on)."""
    import onnxruntime as ort

    if len(idx) == 0:
        raise ParityError(
            "expected rows to check the ONNX graph on, got none: a version is never "
            "published unchecked",
            float("inf"),
        )
    try:
        session = ort.InferenceSession(snapshot.onnx, providers=["CPUExecutionProvider"])
        feeds = {
            "idx": np.ascontiguousarray(idx, np.int64),
            "val": np.ascontiguousarray(val, np.float32),
        }
        (onnx_p,) = session.run(["prob"], feeds)
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ParityError(f"expected the ONNX graph to run, got: {exc}", float("inf")) from None
    mem_p = np.asarray(learner.predict_featurised(idx, val), dtype=np.float64).reshape(-1)
    onnx_p = np.asarray(onnx_p, dtype=np.float64).reshape(-1)
    if onnx_p.shape != mem_p.shape:
        raise ParityError(
            f"expected {mem_p.shape[0]} ONNX scores, got shape {onnx_p.shape}", float("inf")
        )
    diff = float(np.max(np.abs(onnx_p - mem_p)))
    if not diff <= atol:  # NaN fails too
        raise ParityError(
            f"expected the ONNX graph to match the learner within {atol} on {len(idx)} rows, "
            f"got a max abs difference of {diff:.3g}",
            diff,
        )
    return diff
