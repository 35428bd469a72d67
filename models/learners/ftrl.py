"""FTRL-Proximal logistic regression over hashed features (McMahan et al., KDD 2013).

Per coordinate ``i`` the learner keeps ``z_i`` and ``n_i`` (sum of squared gradients);
the weight is computed lazily::

    w_i = 0                                                   if |z_i| <= l1
    w_i = -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)   otherwise

Learning is exact and online: a compiled kernel (:mod:`streamlearn.models.learners.kernels`) walks a
batch one example at a time, predicting each with the weights the previous one left and
then updating the coordinates it touches. The batch size only chunks the work; any batch
size gives the same model as one-at-a-time, so a batch holding one user a hundred times
cannot overshoot. A batch costs ``O(n·K)``, whatever ``hash_bits``.

With ``normalize`` (the default) each coordinate learns on ``x / max|x|`` seen (see
:mod:`streamlearn.models.learners.kernels`), so unscaled numeric columns need no tuning; the
exported weights are divided back, and the ONNX graph stays ``sigmoid(Σ w[idx]·val)``.

Defaults (alpha 0.3, beta 0.1, l1 0, l2 1) were chosen by a grid over alpha
{0.05…2}, beta {0.1, 1}, l1 {0, 1}, l2 {0, 1} on adult, KDD04 bio, women's clothing and
the simulator (``bench/bench_learners.py``): the best mean AUC whose log loss stays below
the constant predictor's on every stream (alpha 0.5 gains 0.002 AUC but overfits the
clothing table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners import kernels
from streamlearn.models.learners.base import FeaturisedLearner
from streamlearn.models.onnx_export import linear_graph
from streamlearn.models.sync import MAX, ROOT, SUM


class FTRL(FeaturisedLearner):
    """FTRL-Proximal logistic regression with L1/L2 regularisation, learnt one example at a
    time."""

    name = "ftrl"
    sequential = True

    def __init__(
        self,
        spec: FeatureSpec,
        alpha: float = 0.3,
        beta: float = 0.1,
        l1: float = 0.0,
        l2: float = 1.0,
        normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, seed)
        kernels.load()
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.normalize = bool(normalize)
        dim = spec.dim
        self._z = np.zeros(dim, dtype=np.float64)
        self._n = np.zeros(dim, dtype=np.float64)
        # Largest |x| seen per coordinate; all ones when not normalising.
        self._scale = np.zeros(dim) if self.normalize else np.ones(dim)

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "l1": self.l1,
            "l2": self.l2,
            "normalize": self.normalize,
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learnt state: ``z``, ``n`` and the normaliser's ``scale``."""
        return {"z": self._z, "n": self._n, "scale": self._scale}

    def sync_rules(self) -> dict[str, str]:
        """``n`` (squared gradients) sums the ranks' deltas, ``z`` sums them over the root
        of the ranks that changed a coordinate, ``scale`` takes the maximum
        (``streamlearn.models.sync``)."""
        return {"z": ROOT, "n": SUM, "scale": MAX}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        self._z, self._n, self._scale = (
            self._array(arrays, k, (self.spec.dim,), np.float64) for k in ("z", "n", "scale")
        )

    def _hyper(self) -> tuple[float, float, float, float]:
        return self.alpha, self.beta, self.l1, self.l2

    def weights(self) -> np.ndarray:
        """The dense raw-feature weight vector (float64, ``2**hash_bits``)."""
        return kernels.ftrl_weights(self._z, self._n, self._scale, *self._hyper())

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for a featurised batch."""
        idx, val = self.check_featurised(idx, val)
        return kernels.ftrl_predict(idx, val, self._z, self._n, self._scale, *self._hyper())

    def _learn(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> np.ndarray:
        rows = y.shape[0]
        return kernels.ftrl_learn(
            idx,
            val,
            y,
            np.ones(rows) if weight is None else weight,
            np.zeros(rows),
            self._z,
            self._n,
            self._scale,
            *self._hyper(),
            self.normalize,
            np.empty(rows),
        )

    def to_onnx(self) -> bytes:
        """Dense-weight logistic-regression graph (see :func:`linear_graph`)."""
        return linear_graph(self.weights(), self.spec.n_slots, "ftrl")
