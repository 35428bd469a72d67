"""Any river classifier under the :class:`~streamlearn.models.protocol.Learner` protocol.

Rows are featurised like every other learner and handed to river as
``{hashed index: value}`` dicts (slot 0, the bias, is left to river's own intercept;
zero values are dropped; indices that collide within a row add up). River learns one
example at a time, so ``*_many`` loop in Python: this is the baseline, not the fast path.
ONNX export exists for ``linear_model.LogisticRegression`` (:class:`RiverLR`); other
estimators raise :class:`~streamlearn.models.errors.SnapshotError` from ``snapshot()``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from streamlearn.models.errors import ModelError, SnapshotError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners.base import FeaturisedLearner
from streamlearn.models.onnx_export import linear_graph


def river_rows(idx: np.ndarray, val: np.ndarray) -> list[dict[int, float]]:
    """Encoded rows as river's ``{coordinate: value}`` dicts (bias slot left out, hashed
    collisions summed, zeros dropped)."""
    out: list[dict[int, float]] = []
    for r_idx, r_val in zip(idx[:, 1:].tolist(), val[:, 1:].tolist(), strict=True):
        x: dict[int, float] = {}
        for i, v in zip(r_idx, r_val, strict=True):
            if v != 0.0:
                x[i] = x.get(i, 0.0) + v
        out.append(x)
    return out


def _build(estimator: str, seed: int, params: dict[str, Any]) -> Any:
    module_name, _, cls_name = estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(f"river.{module_name}"), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelError(
            f"estimator must name a river classifier like 'linear_model.LogisticRegression', "
            f"got {estimator!r}"
        ) from exc
    if "seed" in inspect.signature(cls).parameters:
        params = {**params, "seed": seed}
    return cls(**params)


class RiverLearner(FeaturisedLearner):
    """Wraps ``river.<estimator>(**estimator_params)``; ``seed`` is passed if it takes one."""

    name = "river"

    def __init__(
        self,
        spec: FeatureSpec,
        estimator: str = "linear_model.LogisticRegression",
        seed: int = 0,
        **estimator_params: Any,
    ) -> None:
        super().__init__(spec, seed)
        self.estimator = estimator
        self.estimator_params = estimator_params
        self.model = _build(estimator, seed, estimator_params)

    def params(self) -> dict[str, Any]:
        """The estimator's name and parameters."""
        return {"estimator": self.estimator, **self.estimator_params}

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for a featurised batch."""
        idx, val = self.check_featurised(idx, val)
        predict = self.model.predict_proba_one
        return np.array([predict(x).get(True, 0.0) for x in river_rows(idx, val)], dtype=np.float64)

    def _learn(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        predict, learn = self.model.predict_proba_one, self.model.learn_one
        p = np.empty(idx.shape[0], dtype=np.float64)
        for r, (x, label) in enumerate(zip(river_rows(idx, val), (y > 0).tolist(), strict=True)):
            p[r] = predict(x).get(True, 0.0)
            learn(x, label)
        return p

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Not available for a generic river estimator."""
        raise SnapshotError(
            f"data-only state needs river linear_model.LogisticRegression (learner 'river-lr'), "
            f"got {self.estimator!r}"
        )

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Not available for a generic river estimator."""
        self.state_arrays()

    def to_onnx(self) -> bytes:
        """Not available for a generic river estimator."""
        raise SnapshotError(
            f"ONNX export needs river linear_model.LogisticRegression (learner 'river-lr'), "
            f"got {self.estimator!r}"
        )


class RiverLR(RiverLearner):
    """river ``LogisticRegression`` with SGD at learning rate ``lr``; exports to ONNX."""

    name = "river-lr"

    def __init__(self, spec: FeatureSpec, lr: float = 0.01, l2: float = 0.0, seed: int = 0):
        from river import optim

        self.lr = float(lr)
        self.l2 = float(l2)
        super().__init__(
            spec, "linear_model.LogisticRegression", seed, optimizer=optim.SGD(self.lr), l2=self.l2
        )

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {"lr": self.lr, "l2": self.l2}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Sparse weights (``keys``, ``values``) and the intercept."""
        weights = dict(self.model._weights)
        return {
            "keys": np.fromiter(weights.keys(), dtype=np.int64, count=len(weights)),
            "values": np.fromiter(weights.values(), dtype=np.float64, count=len(weights)),
            "intercept": np.asarray(float(self.model.intercept), dtype=np.float64),
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        from river.utils import VectorDict

        keys, values = arrays.get("keys"), arrays.get("values")
        if keys is None or values is None or keys.shape != values.shape or keys.ndim != 1:
            raise SnapshotError("river-lr state needs 1-d 'keys' and 'values' of one length")
        self.model._weights = VectorDict(
            dict(zip(keys.astype(np.int64).tolist(), values.astype(float).tolist(), strict=True))
        )
        self.model.intercept = float(self._array(arrays, "intercept", (), np.float64))

    def state_extra(self) -> dict[str, Any]:
        """The optimiser's iteration count."""
        return {"n_iterations": int(self.model.optimizer.n_iterations)}

    def load_state_extra(self, extra: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_extra`."""
        self.model.optimizer.n_iterations = int(extra.get("n_iterations", 0))

    def to_onnx(self) -> bytes:
        """Dense-weight logistic-regression graph; the intercept sits at index 0."""
        w = np.zeros(self.spec.dim, dtype=np.float64)
        for i, weight in self.model.weights.items():
            w[i] = weight
        w[0] = self.model.intercept
        return linear_graph(w, self.spec.n_slots, self.name)
