"""Factorization machine over hashed features (Rendle, 2010).

``logit = Σ_k w[idx_k]·val_k + ½ Σ_f [(Σ_k v[idx_k,f]·val_k)² − Σ_k (v[idx_k,f]·val_k)²]``

The bias slot (slot 0) takes part in the linear term only. Learning is exact and
online, in a compiled kernel (:mod:`streamlearn.models.learners.kernels`): one example at a time,
analytic gradients (``∂logit/∂v_k = val_k · (s − v_k·val_k)``), Adagrad on ``w`` (one
accumulator per coordinate) and row-wise Adagrad on ``v``. The batch size only chunks the
work. With ``normalize`` (the default) coordinates learn on ``x / max|x|`` seen and the
exported ``w`` and ``v`` are divided back, so the ONNX graph takes raw features.

Defaults (lr 0.2, lr_factors 0.02) were chosen by a grid over lr {0.02…0.5} and
lr_factors {0.01, 0.02, 0.05} on adult, KDD04 bio, women's clothing and the simulator
(``bench/bench_learners.py``): the best mean AUC with log loss below the constant
predictor's on every stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners import kernels
from streamlearn.models.learners.base import FeaturisedLearner
from streamlearn.models.onnx_export import fm_graph
from streamlearn.models.sync import MAX, MEAN, SUM


class FM(FeaturisedLearner):
    """Factorization machine for binary targets (log loss), learnt one example at a time."""

    name = "fm"
    sequential = True

    def __init__(
        self,
        spec: FeatureSpec,
        factors: int = 8,
        lr: float = 0.2,
        lr_factors: float = 0.02,
        l2: float = 0.0,
        l2_factors: float = 0.0,
        init_std: float = 0.01,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, seed)
        kernels.load()
        self.factors = int(factors)
        self.lr = float(lr)
        self.lr_factors = float(lr_factors)
        self.l2 = float(l2)
        self.l2_factors = float(l2_factors)
        self.init_std = float(init_std)
        self.normalize = bool(normalize)
        dim = spec.dim
        rng = np.random.default_rng(seed)
        self.w = np.zeros(dim, dtype=np.float64)
        self.v = (rng.standard_normal((dim, self.factors), dtype=np.float32)) * np.float32(
            self.init_std
        )
        self._acc_w = np.zeros(dim, dtype=np.float64)
        self._acc_v = np.zeros(dim, dtype=np.float64)
        self._scale = np.zeros(dim) if self.normalize else np.ones(dim)

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {
            "factors": self.factors,
            "lr": self.lr,
            "lr_factors": self.lr_factors,
            "l2": self.l2,
            "l2_factors": self.l2_factors,
            "init_std": self.init_std,
            "normalize": self.normalize,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learnt state: ``w``, ``v``, their Adagrad accumulators and ``scale``."""
        return {
            "w": self.w,
            "v": self.v,
            "acc_w": self._acc_w,
            "acc_v": self._acc_v,
            "scale": self._scale,
        }

    def sync_rules(self) -> dict[str, str]:
        """The Adagrad accumulators (squared gradients) sum the ranks' deltas, the weights
        take their mean, ``scale`` the maximum (``streamlearn.models.sync``)."""
        return {"w": MEAN, "v": MEAN, "acc_w": SUM, "acc_v": SUM, "scale": MAX}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        dim = self.spec.dim
        self.w = self._array(arrays, "w", (dim,), np.float64)
        self.v = self._array(arrays, "v", (dim, self.factors), np.float32)
        self._acc_w = self._array(arrays, "acc_w", (dim,), np.float64)
        self._acc_v = self._array(arrays, "acc_v", (dim,), np.float64)
        self._scale = self._array(arrays, "scale", (dim,), np.float64)

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for a featurised batch."""
        idx, val = self.check_featurised(idx, val)
        return kernels.fm_predict(idx, val, self.w, self.v, self._scale)

    def _learn(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> np.ndarray:
        return kernels.fm_learn(
            idx,
            val,
            y,
            np.ones(y.shape[0]) if weight is None else weight,
            self.w,
            self.v,
            self._acc_w,
            self._acc_v,
            self._scale,
            self.lr,
            self.lr_factors,
            self.l2,
            self.l2_factors,
            self.normalize,
        )

    def to_onnx(self) -> bytes:
        """FM graph with the raw-feature ``w`` and ``v`` as initializers."""
        inv = np.divide(1.0, self._scale, out=np.zeros_like(self._scale), where=self._scale > 0)
        return fm_graph(self.w * inv, self.v * inv[:, None].astype(np.float32), self.spec.n_slots)
