"""Factorization machine over hashed features (Rendle, 2010), in torch.

``logit = Σ_k w[idx_k]·val_k + ½ Σ_f [(Σ_k v[idx_k,f]·val_k)² − Σ_k (v[idx_k,f]·val_k)²]``

The bias slot (slot 0) takes part in the linear term only. Gradients are analytic
(``∂logit/∂v_k = val_k · (s − v_k·val_k)``), so there is no autograd graph per batch;
``w`` and ``v`` are trained by row-wise Adagrad (see :mod:`models.learners.torch_base`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.features import FeatureSpec
from models.learners.base import EncodedLearner
from models.learners.torch_base import generator, rowwise_adagrad_, set_threads, to_tensors
from models.onnx_export import fm_graph


class FM(EncodedLearner):
    """Factorization machine for binary targets (log loss)."""

    name = "fm"

    def __init__(
        self,
        spec: FeatureSpec,
        factors: int = 8,
        lr: float = 0.05,
        lr_factors: float = 0.02,
        init_std: float = 0.01,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, seed)
        self.factors = int(factors)
        self.lr = float(lr)
        self.lr_factors = float(lr_factors)
        self.init_std = float(init_std)
        self.num_threads = num_threads
        set_threads(num_threads)
        dim = spec.dim
        self.w = torch.zeros(dim)
        self.v = torch.randn(dim, self.factors, generator=generator(seed)) * self.init_std
        self._acc_w = torch.zeros(dim)
        self._acc_v = torch.zeros(dim)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        set_threads(self.num_threads)

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {
            "factors": self.factors,
            "lr": self.lr,
            "lr_factors": self.lr_factors,
            "init_std": self.init_std,
            "num_threads": self.num_threads,
        }

    def _forward(
        self, idx: torch.Tensor, val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        linear = (self.w[idx] * val).sum(dim=1)
        xv = self.v[idx[:, 1:]] * val[:, 1:, None]  # [n, K-1, f]
        s = xv.sum(dim=1)  # [n, f]
        pair = 0.5 * (s * s - (xv * xv).sum(dim=1)).sum(dim=1)
        return linear + pair, xv, s

    def predict_encoded(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for an encoded batch."""
        idx, val = self.check_encoded(idx, val)
        ti, tv = to_tensors(idx, val)
        with torch.no_grad():
            logit, _, _ = self._forward(ti, tv)
        return torch.sigmoid(logit).numpy().astype(np.float64)

    def _learn(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        ti, tv = to_tensors(idx, val)
        with torch.no_grad():
            logit, xv, s = self._forward(ti, tv)
            p = torch.sigmoid(logit)
            err = p - torch.from_numpy(y).to(torch.float32)  # ∂loss/∂logit
            grad_w = (err[:, None] * tv).reshape(-1)
            # ∂logit/∂v_k = val_k (s − v_k val_k) = val_k s − val_k·xv_k
            tvf = tv[:, 1:, None]
            grad_v = (err[:, None, None] * (tvf * s[:, None, :] - tvf * xv)).reshape(
                -1, self.factors
            )
            rowwise_adagrad_(self.w, self._acc_w, ti.reshape(-1), grad_w, self.lr)
            rowwise_adagrad_(self.v, self._acc_v, ti[:, 1:].reshape(-1), grad_v, self.lr_factors)
        return p.numpy().astype(np.float64)

    def to_onnx(self) -> bytes:
        """FM graph with ``w`` and ``v`` as initializers."""
        return fm_graph(self.w.numpy(), self.v.numpy(), self.spec.n_slots)
