"""Wide & deep CTR model over hashed features: an exact online FTRL wide part plus a
DLRM-style deep part (hashed embeddings and an MLP, in torch).

``logit = Σ_k w[idx_k]·x_k + MLP(concat_k(emb[idx_k]·x_k))``, with ``x_k = val_k / s[idx_k]``
(``s`` the largest ``|val|`` each coordinate has seen, shared by both parts).

The two parts learn at different grains, so a burst of one key cannot overshoot and the
model still adapts within a session:

* the wide part is the FTRL-Proximal kernel of :mod:`streamlearn.models.learners.ftrl`, learning
  every example in stream order, one at a time (Vowpal Wabbit's and river's semantics),
  with the deep part's output as a fixed offset: a user's or an item's own weight moves
  after each of its examples, as in ``ftrl``;
* the deep part (embeddings by row-wise Adagrad, the MLP by Adam) learns in steps of
  ``micro_batch`` examples in stream order, on the loss of the full logit (the wide
  margin each example was predicted with, plus its own). A key repeated within a step
  takes one averaged step, not one per occurrence (see
  :func:`~streamlearn.models.learners.kernels.rowwise_adagrad`). Steps are counted across calls (a
  partial one waits, with the inputs and wide margins of its examples, in the state).

Every example is predicted before it is learned: by the wide state the examples before
it left, and the deep state at the start of its step. The caller's batch size only
chunks the work: any batch size gives the same model, to the bit (a partial step's
rows are scored padded to a whole step, so the matrix products keep their shapes), so
``eval --batch-size 1000`` and the trainer learn the same model.
The graph (:func:`~streamlearn.models.onnx_export.deep_graph`) takes raw features: the normaliser
is folded into the exported wide weights and embedding rows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from streamlearn.models.errors import ModelError, SnapshotError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners import kernels
from streamlearn.models.learners.base import FeaturisedLearner, sigmoid
from streamlearn.models.learners.torch_base import generator, set_threads
from streamlearn.models.onnx_export import deep_graph


@dataclass(frozen=True)
class _Pending:
    """The deep part's current step so far: examples already predicted and learnt by the
    wide part, with their normalised inputs and the wide margins they were predicted with."""

    idx: np.ndarray
    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    wide: np.ndarray

    @classmethod
    def empty(cls, k: int) -> _Pending:
        """No example pending (rows of width ``k``)."""
        return cls(
            np.empty((0, k), dtype=np.int64),
            np.empty((0, k), dtype=np.float32),
            np.empty(0),
            np.empty(0),
            np.empty(0),
        )

    @property
    def rows(self) -> int:
        """Examples pending."""
        return int(self.y.shape[0])

    def add(
        self, idx: np.ndarray, x: np.ndarray, y: np.ndarray, weight: np.ndarray, wide: np.ndarray
    ) -> _Pending:
        """These examples appended (a new object)."""
        return _Pending(
            np.concatenate([self.idx, idx]),
            np.concatenate([self.x, x]),
            np.concatenate([self.y, y]),
            np.concatenate([self.weight, weight]),
            np.concatenate([self.wide, wide]),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """As named state arrays."""
        return {f"pending_{k}": v for k, v in self.__dict__.items()}


class Deep(FeaturisedLearner):
    """Wide (exact online FTRL) & deep (hashed embeddings + MLP) logistic model."""

    name = "deep"
    sequential = True

    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 16,
        hidden: tuple[int, ...] = (64, 32),
        lr: float = 0.05,
        lr_dense: float = 1e-3,
        init_std: float = 0.05,
        micro_batch: int = 32,
        alpha: float = 0.3,
        beta: float = 0.1,
        l1: float = 0.0,
        l2: float = 1.0,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, seed)
        kernels.load()
        if micro_batch < 1:
            raise ModelError(f"micro_batch must be >= 1, got {micro_batch}")
        self.micro_batch = int(micro_batch)
        self.embedding_dim = int(embedding_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.lr = float(lr)
        self.lr_dense = float(lr_dense)
        self.init_std = float(init_std)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.num_threads = num_threads
        set_threads(num_threads)
        gen = generator(seed)
        dim = spec.dim
        # Wide part: FTRL state and the normaliser both parts share.
        self._z = np.zeros(dim, dtype=np.float64)
        self._n = np.zeros(dim, dtype=np.float64)
        self._scale = np.zeros(dim, dtype=np.float64)
        # Deep part.
        self.emb = torch.randn(dim, self.embedding_dim, generator=gen) * self.init_std
        self._acc_emb = torch.zeros(dim)
        sizes = [spec.n_slots * self.embedding_dim, *self.hidden, 1]
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default init, seeded
            weight = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
            bias = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
            self.layers.append((weight.requires_grad_(), bias.requires_grad_()))
        self._optim = self._make_optimizer()
        self._pending = _Pending.empty(spec.n_slots)

    def _make_optimizer(self) -> torch.optim.Adam:
        params = [t for layer in self.layers for t in layer]
        return torch.optim.Adam(params, lr=self.lr_dense, fused=True)

    def _hyper(self) -> tuple[float, float, float, float]:
        return self.alpha, self.beta, self.l1, self.l2

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor (seed excluded)."""
        return {
            "embedding_dim": self.embedding_dim,
            "hidden": list(self.hidden),
            "lr": self.lr,
            "lr_dense": self.lr_dense,
            "init_std": self.init_std,
            "micro_batch": self.micro_batch,
            "alpha": self.alpha,
            "beta": self.beta,
            "l1": self.l1,
            "l2": self.l2,
            "num_threads": self.num_threads,
        }

    # -- state -------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """FTRL state, normaliser, embeddings and their accumulators, MLP and Adam moments."""
        arrays = {
            "z": self._z,
            "n": self._n,
            "scale": self._scale,
            "emb": self.emb.numpy(),
            "acc_emb": self._acc_emb.numpy(),
            **self._pending.arrays(),
        }
        optim = self._optim.state_dict()["state"]
        for p, tensor in enumerate(t for layer in self.layers for t in layer):
            arrays[f"mlp{p}"] = tensor.detach().numpy()
            moments = optim.get(p)
            if moments:
                arrays[f"adam{p}_step"] = np.asarray(float(moments["step"]), dtype=np.float64)
                arrays[f"adam{p}_m"] = moments["exp_avg"].numpy()
                arrays[f"adam{p}_v"] = moments["exp_avg_sq"].numpy()
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        dim, d = self.spec.dim, self.embedding_dim
        self._z, self._n, self._scale = (
            self._array(arrays, k, (dim,), np.float64) for k in ("z", "n", "scale")
        )
        self.emb = torch.from_numpy(self._array(arrays, "emb", (dim, d), np.float32))
        self._acc_emb = torch.from_numpy(self._array(arrays, "acc_emb", (dim,), np.float32))
        self._pending = self._load_pending(arrays)
        params = [t for layer in self.layers for t in layer]
        moments: dict[int, dict[str, torch.Tensor]] = {}
        with torch.no_grad():
            for p, tensor in enumerate(params):
                shape = tuple(tensor.shape)
                tensor.copy_(torch.from_numpy(self._array(arrays, f"mlp{p}", shape, np.float32)))
                if f"adam{p}_step" in arrays:
                    step = self._array(arrays, f"adam{p}_step", (), np.float64)
                    moments[p] = {
                        "step": torch.tensor(float(step)),
                        "exp_avg": torch.from_numpy(
                            self._array(arrays, f"adam{p}_m", shape, np.float32)
                        ),
                        "exp_avg_sq": torch.from_numpy(
                            self._array(arrays, f"adam{p}_v", shape, np.float32)
                        ),
                    }
        self._optim = self._make_optimizer()
        optim_state = self._optim.state_dict()
        optim_state["state"] = moments
        self._optim.load_state_dict(optim_state)

    def _load_pending(self, arrays: dict[str, np.ndarray]) -> _Pending:
        y = arrays.get("pending_y")
        rows = -1 if y is None or y.ndim != 1 else y.shape[0]
        if not 0 <= rows < self.micro_batch:
            raise SnapshotError(
                f"deep learner state must hold 0 to {self.micro_batch - 1} pending examples, "
                f"got array pending_y of shape {None if y is None else y.shape}"
            )
        k = self.spec.n_slots
        return _Pending(
            self._array(arrays, "pending_idx", (rows, k), np.int64),
            self._array(arrays, "pending_x", (rows, k), np.float32),
            self._array(arrays, "pending_y", (rows,), np.float64),
            self._array(arrays, "pending_weight", (rows,), np.float64),
            self._array(arrays, "pending_wide", (rows,), np.float64),
        )

    # -- the model ---------------------------------------------------------------
    def _deep_logit(self, e_rows: torch.Tensor, x: np.ndarray) -> torch.Tensor:
        n, k = x.shape
        h = (e_rows.reshape(n, k, -1) * torch.from_numpy(x)[:, :, None]).reshape(n, -1)
        for i, (weight, bias) in enumerate(self.layers):
            h = F.linear(h, weight, bias)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h[:, 0]

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Probabilities (float64 ``(n,)``) for a featurised batch."""
        idx, val = self.check_featurised(idx, val)
        wide = kernels.ftrl_margin(idx, val, self._z, self._n, self._scale, *self._hyper())
        s = self._scale[idx]
        x = np.zeros(val.shape, dtype=np.float32)
        np.divide(val, s, out=x, where=s > 0, casting="unsafe")
        with torch.no_grad():
            deep = self._deep_logit(self.emb[torch.from_numpy(idx.reshape(-1))], x)
        return sigmoid(wide + deep.numpy().astype(np.float64))

    def _learn(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> np.ndarray:
        """Predict and learn in stream order; the deep part steps on every ``micro_batch``
        examples, counted across calls (a partial one waits in ``_pending``)."""
        rows = idx.shape[0]
        weight = np.ones(rows) if weight is None else weight
        out = np.empty(rows, dtype=np.float64)
        s = 0
        while s < rows:
            take = min(self.micro_batch - self._pending.rows, rows - s)
            piece = slice(s, s + take)
            out[piece] = self._piece(idx[piece], val[piece], y[piece], weight[piece])
            s += take
        return out

    def _piece(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray, weight: np.ndarray
    ) -> np.ndarray:
        """Examples up to the end of the current step: predicted by the deep state at the
        step's start and the wide state example by example, learnt by the wide part; the
        deep part steps once the step is full."""
        x = kernels.normalise(idx, val, self._scale)
        rows, mb = idx.shape[0], self.micro_batch
        whole = self._pending.rows == 0 and rows == mb
        if whole:
            flat = torch.from_numpy(idx.reshape(-1))
            e_rows = self.emb.index_select(0, flat).requires_grad_()
            deep = self._deep_logit(e_rows, x)
        else:
            # Padded to a whole step: the same matrix shapes as a whole step, so each
            # row's output is the same to the bit however the caller cut the stream.
            padded = np.zeros((mb, idx.shape[1]), dtype=np.int64)
            padded[:rows] = idx
            xs = np.zeros((mb, idx.shape[1]), dtype=np.float32)
            xs[:rows] = x
            with torch.no_grad():
                e_pad = self.emb.index_select(0, torch.from_numpy(padded.reshape(-1)))
                deep = self._deep_logit(e_pad, xs)[:rows]
        wide = np.empty(rows, dtype=np.float64)
        p = kernels.ftrl_learn(
            idx,
            x,
            y,
            weight,
            deep.detach().numpy().astype(np.float64),
            self._z,
            self._n,
            self._scale,
            *self._hyper(),
            False,
            wide,
        )
        if whole:
            self._deep_step(flat, e_rows, deep, wide, y, weight)
            return p
        step = self._pending.add(idx, x, y, weight, wide)
        if step.rows == self.micro_batch:
            flat = torch.from_numpy(step.idx.reshape(-1))
            e_rows = self.emb.index_select(0, flat).requires_grad_()
            deep = self._deep_logit(e_rows, step.x)
            self._deep_step(flat, e_rows, deep, step.wide, step.y, step.weight)
            step = _Pending.empty(self.spec.n_slots)
        self._pending = step
        return p

    def _deep_step(
        self,
        flat: torch.Tensor,
        e_rows: torch.Tensor,
        deep: torch.Tensor,
        wide: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        """One step of the deep part on the loss of ``wide + deep`` (wide held fixed)."""
        if not weight.any():
            return
        loss = F.binary_cross_entropy_with_logits(
            deep + torch.from_numpy(wide).to(torch.float32),
            torch.from_numpy(y).to(torch.float32),
            weight=torch.from_numpy(weight).to(torch.float32),
            reduction="sum",
        )
        self._optim.zero_grad()
        loss.backward()
        self._optim.step()
        assert e_rows.grad is not None
        kernels.rowwise_adagrad(
            self.emb.numpy(), self._acc_emb.numpy(), flat.numpy(), e_rows.grad.numpy(), self.lr
        )

    def to_onnx(self) -> bytes:
        """Wide & deep graph over raw features (the normaliser folded into the tables)."""
        inv = np.divide(1.0, self._scale, out=np.zeros_like(self._scale), where=self._scale > 0)
        wide = kernels.ftrl_weights(self._z, self._n, self._scale, *self._hyper())
        emb = self.emb.numpy() * inv[:, None].astype(np.float32)
        layers = [(w.detach().numpy(), b.detach().numpy()) for w, b in self.layers]
        return deep_graph(wide, emb, layers, self.spec.n_slots)
