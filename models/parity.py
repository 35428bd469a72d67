"""ONNX parity: the graph a version serves must score what the learner it came from scores.

Every publish path (the online trainer, offline training, the retrain flow) runs the
snapshot's graph in onnxruntime on a sample of real rows, featurised as serving
featurises them, and compares it with the in-memory learner; a version whose largest
difference is above :data:`PARITY_ATOL` is never served (the online trainer does not
publish it, offline training fails). onnxruntime is imported when a check runs, so
importing this module costs nothing.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from streamlearn.models.errors import ParityError
from streamlearn.models.protocol import Learner
from streamlearn.models.snapshot import Snapshot

#: Largest |onnxruntime − in-memory| probability a published version may show.
PARITY_ATOL: Final = 1e-5


def onnx_parity(
    snapshot: Snapshot,
    learner: Learner,
    idx: np.ndarray,
    val: np.ndarray,
    atol: float = PARITY_ATOL,
) -> float:
    """The largest |onnxruntime − learner| over the featurised rows ``(idx, val)``.

    Raises :class:`ParityError` above ``atol`` (or when the graph cannot run, or gives
    the wrong shape)."""
    import onnxruntime as ort

    if len(idx) == 0:
        return 0.0
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
