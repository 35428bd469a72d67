"""Shared plumbing for learners that work on featurised ``(idx, val)`` arrays."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlearn.models.errors import FeatureError, SnapshotError
from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.models.protocol import Row
from streamlearn.models.snapshot import SERVING_ONLY, Snapshot
from streamlearn.models.state import encode_arrays

#: Smallest chunk a batch is split into while a learner warms up.
WARMUP_CHUNK = 16


def sigmoid(margin: np.ndarray) -> np.ndarray:
    """Logistic function, float64, overflow-safe."""
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -35.0, 35.0)))


class FeaturisedLearner(abc.ABC):
    """Implements the raw-row half of :class:`~streamlearn.models.protocol.Learner` on the
    featurised half.

    Subclasses implement :meth:`predict_featurised`, :meth:`_learn` (returning the
    pre-update probabilities), :meth:`params`, :meth:`to_onnx`, and their state as plain
    arrays (:meth:`state_arrays`, :meth:`load_state_arrays`; JSON extras in
    :meth:`state_extra`, :meth:`load_state_extra`), which is what a snapshot stores.
    A ``sequential`` learner learns a batch one example at a time inside ``_learn``, so
    it needs no warm-up chunking.
    """

    name: str = ""
    sequential: bool = False

    def __init__(self, spec: FeatureSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed
        self.featuriser = Featuriser(spec)
        self.examples_seen = 0

    # -- featurised API -------------------------------------------------------------
    def check_featurised(self, idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate and normalise a featurised batch; :class:`FeatureError` if malformed."""
        idx = np.asarray(idx)
        val = np.asarray(val)
        k = self.spec.n_slots
        if idx.ndim != 2 or idx.shape[1] != k or val.shape != idx.shape:
            raise FeatureError(
                f"featurised batch must be idx/val of shape (n, {k}), "
                f"got idx {idx.shape} and val {val.shape}"
            )
        if idx.dtype != np.int64:
            idx = idx.astype(np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.spec.dim):
            raise FeatureError(
                f"indices must lie in [0, {self.spec.dim}), "
                f"got range [{int(idx.min())}, {int(idx.max())}]"
            )
        if val.dtype != np.float32:
            val = val.astype(np.float32)
        # The compiled kernels take C-ordered arrays (another layout would compile anew).
        return np.ascontiguousarray(idx), np.ascontiguousarray(val)

    @staticmethod
    def check_labels(y: np.ndarray | Sequence[float], n: int) -> np.ndarray:
        """Labels as float64 ``(n,)`` in {0, 1}; :class:`FeatureError` otherwise."""
        arr = np.asarray(y, dtype=np.float64).reshape(-1)
        if arr.shape[0] != n:
            raise FeatureError(f"expected {n} labels, got {arr.shape[0]}")
        if arr.size and not np.all((arr == 0.0) | (arr == 1.0)):
            raise FeatureError(f"labels must be 0 or 1, got values {np.unique(arr)[:5].tolist()}")
        return arr

    @abc.abstractmethod
    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for a featurised batch."""

    @abc.abstractmethod
    def _learn(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Update on a validated batch; return the probabilities before the update."""

    def predict_learn_featurised(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray
    ) -> np.ndarray:
        """Progressive validation: predict, then learn; returns the predictions.

        A sequential learner learns the batch one example at a time. For the others,
        warm-up: while the learner has seen fewer examples than the batch holds, the batch
        is learnt in chunks of ``max(WARMUP_CHUNK, examples_seen)`` (doubling), so a
        fresh model does not score a whole large first batch untrained. Afterwards a
        batch is one update.
        """
        idx, val = self.check_featurised(idx, val)
        labels = self.check_labels(y, idx.shape[0])
        n = idx.shape[0]
        if self.sequential or self.examples_seen >= n:
            p = self._learn(idx, val, labels)
            self.examples_seen += n
            return p
        out = np.empty(n, dtype=np.float64)
        start = 0
        while start < n:
            stop = min(n, start + max(WARMUP_CHUNK, self.examples_seen))
            out[start:stop] = self._learn(idx[start:stop], val[start:stop], labels[start:stop])
            self.examples_seen += stop - start
            start = stop
        return out

    def predict_learn_kept(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray, keep: np.ndarray
    ) -> np.ndarray:
        """Predict every row, learn only the rows where ``keep`` is true, in stream order.

        A sequential learner predicts each row with the state the rows before it left
        (dropped rows are scored, not learned); the others predict the batch first.
        ``examples_seen`` grows by the rows learned. Returns the pre-update probabilities.
        """
        idx, val = self.check_featurised(idx, val)
        labels = self.check_labels(y, idx.shape[0])
        keep = np.asarray(keep, dtype=bool)
        if self.sequential:
            p = self._learn(idx, val, labels, keep.astype(np.float64))  # type: ignore[call-arg]
            self.examples_seen += int(keep.sum())
            return p
        p = self.predict_featurised(idx, val)
        if keep.any():
            self.learn_featurised(idx[keep], val[keep], labels[keep])
        return p

    def learn_featurised(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> None:
        """Update on a featurised batch."""
        self.predict_learn_featurised(idx, val, y)

    # -- raw rows ----------------------------------------------------------------
    def predict_proba_one(self, x: Row) -> float:
        """P(y=1) for one raw row (river's method of that name returns ``{False: …, True: …}``;
        this returns the ``True`` entry as a float)."""
        idx, val = self.featuriser.transform_one(x)
        return float(self.predict_featurised(idx[None, :], val[None, :])[0])

    def predict_proba_many(self, xs: Sequence[Row]) -> np.ndarray:
        """P(y=1) (float64 ``(n,)``) for raw rows."""
        idx, val = self.featuriser.transform_many(xs)
        return self.predict_featurised(idx, val)

    def learn_one(self, x: Row, y: float) -> None:
        """Update on one raw row."""
        idx, val = self.featuriser.transform_one(x)
        self.learn_featurised(idx[None, :], val[None, :], np.array([y], dtype=np.float64))

    def learn_many(self, xs: Sequence[Row], ys: Sequence[float] | np.ndarray) -> None:
        """Update on raw rows (one mini-batch)."""
        idx, val = self.featuriser.transform_many(xs)
        self.learn_featurised(idx, val, np.asarray(ys, dtype=np.float64))

    # -- snapshots ---------------------------------------------------------------
    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor hyper-parameters (JSON-safe), seed excluded."""

    @abc.abstractmethod
    def to_onnx(self) -> bytes:
        """Serving graph: ``idx``, ``val`` → ``prob`` (see ARCHITECTURE.md)."""

    @abc.abstractmethod
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learnt state as named numeric arrays (views are fine; nothing is copied)."""

    @abc.abstractmethod
    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Put back the state of :meth:`state_arrays` (the learner was built with the same
        params, seed and spec)."""

    def state_extra(self) -> dict[str, Any]:
        """JSON-safe state that is not an array (a counter, a random generator's state)."""
        return {}

    def load_state_extra(self, extra: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_extra`."""
        return None

    @staticmethod
    def _array(
        arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: type
    ) -> np.ndarray:
        """``arrays[key]`` checked for shape and dtype, as a writable array of its own."""
        try:
            arr = arrays[key]
        except KeyError:
            raise SnapshotError(f"learner state lacks array {key!r}") from None
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise SnapshotError(
                f"learner state array {key!r} must be {np.dtype(dtype)} of shape {shape}, "
                f"got {arr.dtype} of shape {arr.shape}"
            )
        return np.array(arr, copy=True)

    def state_header(self) -> dict[str, Any]:
        """The JSON header of this learner's state: what rebuilds it by name
        (:func:`streamlearn.models.zoo.load_state`)."""
        return {
            "learner": self.name,
            "params": self.params(),
            "seed": self.seed,
            "feature_spec": self.spec.to_dict(),
            "negative_rate": None,
            "wrapper_seed": self.seed,
            "examples_seen": self.examples_seen,
            "extra": self.state_extra(),
        }

    def snapshot(self, state: bool = True) -> Snapshot:
        """ONNX graph, data-only learner state (see :mod:`streamlearn.models.state`) and metadata.

        ``state=False``: a serving-only snapshot (``serving_only`` in the metadata), the
        graph without the learner state: what serving needs, not a point to resume from.
        """
        metadata: dict[str, object] = {
            "learner": self.name,
            "params": self.params(),
            "seed": self.seed,
            "feature_spec": self.spec.to_dict(),
            "kind": "ctr",
            "inputs": ["idx", "val"],
            "output": "prob",
            "examples_seen": self.examples_seen,
        }
        if not state:
            return Snapshot(self.to_onnx(), b"", {**metadata, SERVING_ONLY: True})
        dumped = encode_arrays(self.state_header(), self.state_arrays())
        metadata["state_format"] = dumped.format
        metadata["state_sha256"] = dumped.sha256
        return Snapshot(onnx=self.to_onnx(), state=dumped.data, metadata=metadata)
