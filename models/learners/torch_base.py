"""Plumbing for the torch learners: seeded initialisation and thread control.

The hashed embedding tables are plain tensors sharing memory with numpy arrays, updated
by a compiled row-wise Adagrad on the rows a step touches
(:func:`streamlearn.models.learners.kernels.rowwise_adagrad`), the scheme DLRM and FBGEMM use: one
accumulator per row, so memory stays ``O(2**hash_bits · dim)`` and a step costs
``O(n · K · dim)``. torch's own sparse optimizers coalesce a sparse gradient per step and
run several times slower here.
"""

from __future__ import annotations

import torch

from streamlearn.models.errors import ModelError


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
