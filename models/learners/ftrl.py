"""FTRL-Proximal logistic regression over hashed features (McMahan et al., KDD 2013).

Per coordinate ``i`` the learner keeps ``z_i`` and ``n_i`` (sum of squared gradients);
the weight is computed lazily::

    w_i = 0                                                   if |z_i| <= l1
    w_i = -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)   otherwise

A mini-batch is applied in one vectorised step: predictions use the weights before the
batch, and each coordinate takes one FTRL step with the sum of its gradients over the
batch (``np.add.at``), its ``n`` growing by the square of that sum. A coordinate seen once
in a batch gets exactly the sequential update; a frequent one (the bias, a popular item)
gets one bounded step per batch instead of hundreds of steps without feedback, which
would overshoot (measured: the sum-of-squares variant loses ~0.05 AUC at batch 1000). Only the coordinates
present in the batch are read or written: a batch costs O(n·K), whatever ``hash_bits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.features import FeatureSpec
from models.learners.base import EncodedLearner, sigmoid
from models.onnx_export import linear_graph


class FTRL(EncodedLearner):
    """FTRL-Proximal logistic regression with L1/L2 regularisation."""

    name = "ftrl"

    def __init__(
        self,
        spec: FeatureSpec,
        alpha: float = 0.5,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, seed)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.l1 = float(l1)
        self.l2 = float(l2)
        dim = spec.dim
        self._z = np.zeros(dim, dtype=np.float64)
        self._n = np.zeros(dim, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {"alpha": self.alpha, "beta": self.beta, "l1": self.l1, "l2": self.l2}

    def _weights(
        self, z: np.ndarray, n: np.ndarray, sqrt_n: np.ndarray | None = None
    ) -> np.ndarray:
        denom = np.sqrt(n) if sqrt_n is None else sqrt_n + 0.0
        denom += self.beta
        denom /= self.alpha
        denom += self.l2
        if self.l1 == 0.0:
            return np.divide(-z, denom, out=denom)
        w = -(z - np.sign(z) * self.l1) / denom
        w[np.abs(z) <= self.l1] = 0.0
        return w

    def weights(self) -> np.ndarray:
        """The dense weight vector (float64, ``2**hash_bits``)."""
        return self._weights(self._z, self._n)

    def predict_encoded(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for an encoded batch."""
        idx, val = self.check_encoded(idx, val)
        w = self._weights(self._z[idx], self._n[idx])
        return sigmoid(np.einsum("ij,ij->i", w, val))

    def _learn(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        flat = idx.ravel()
        z = self._z[flat]
        n = self._n[flat]
        sqrt_n = np.sqrt(n)
        w = self._weights(z, n, sqrt_n)
        x = val.astype(np.float64)
        p = sigmoid(np.einsum("ij,ij->i", w.reshape(idx.shape), x))
        g = ((p - y)[:, None] * x).ravel()
        # Sum each coordinate's gradients over the batch in place; duplicated coordinates
        # then read back identical totals, so the scatters below are well defined.
        np.add.at(self._z, flat, g)
        z_new = self._z[flat]
        g_sum = z_new - z
        n_new = n + g_sum * g_sum
        sigma = np.sqrt(n_new)
        sigma -= sqrt_n
        sigma *= w
        sigma /= self.alpha
        z_new -= sigma
        self._z[flat] = z_new
        self._n[flat] = n_new
        return p

    def to_onnx(self) -> bytes:
        """Dense-weight logistic-regression graph (see :func:`linear_graph`)."""
        return linear_graph(self.weights(), self.spec.n_slots, "ftrl")
