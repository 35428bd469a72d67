"""Plumbing shared by the torch learners: seeded init, thread control, row-wise Adagrad.

The sparse tables (hashed embeddings, wide weights) are plain tensors updated by a
row-wise Adagrad on the rows a batch touches (``index_add_``), the scheme DLRM and
FBGEMM use: one accumulator per row, so memory stays ``O(2**hash_bits · dim)`` and a
batch costs ``O(n · K · dim)``. torch's own sparse optimizers coalesce a sparse gradient
per step and run at a third of the speed here.
"""

from __future__ import annotations

import numpy as np
import torch

from models.errors import ModelError

_ADAGRAD_EPS = 1e-10


def generator(seed: int) -> torch.Generator:
    """A torch generator seeded with ``seed`` (global RNG state is never touched)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op thread count when asked (process-wide in torch)."""
    if num_threads is None:
        return
    if num_threads < 1:
        raise ModelError(f"num_threads must be >= 1 or None, got {num_threads}")
    torch.set_num_threads(int(num_threads))


def rowwise_adagrad_(
    table: torch.Tensor, acc: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, lr: float
) -> None:
    """Row-wise Adagrad step on ``table[rows]``; a row listed ``c`` times takes one step.

    ``table`` is ``[dim]`` or ``[dim, d]``, ``acc`` is ``[dim]``, ``grad`` matches
    ``table[rows]``. The gradients of a repeated row (the bias, a user in a session, a
    popular item) are averaged, not summed, so a batch holding one key a hundred times
    moves it one step, as one example would, instead of a hundred steps computed from
    the same stale prediction (which overshoots). The accumulator grows by the mean
    squared (averaged) gradient of each row.
    """
    uniq, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
    summed = torch.zeros((uniq.shape[0], *grad.shape[1:]), dtype=grad.dtype)
    summed.index_add_(0, inverse, grad)
    g = summed / (counts.to(grad.dtype) if grad.dim() == 1 else counts.to(grad.dtype)[:, None])
    g2 = g * g if g.dim() == 1 else (g * g).mean(dim=1)
    acc.index_add_(0, uniq, g2)
    scale = acc.index_select(0, uniq).add_(_ADAGRAD_EPS).rsqrt_().mul_(-lr)
    table.index_add_(0, uniq, g * (scale if g.dim() == 1 else scale[:, None]))


def to_tensors(idx: np.ndarray, val: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """numpy ``(idx int64, val float32)`` → torch tensors sharing memory."""
    return torch.from_numpy(idx), torch.from_numpy(val)
