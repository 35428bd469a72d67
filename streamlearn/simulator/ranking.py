"""Ranking candidates and what a ranking is worth under the hidden truth.

Expected CTRs are computed from the truth, not sampled, so policies can be compared on
the same requests without noise:

* a policy's expected CTR is the mean true CTR of the items it shows, each at its
  position;
* random ranking shows a uniformly random ordered k-subset, so every position holds a
  uniformly random candidate: its expected CTR is the mean of the whole
  ``candidates × positions`` table;
* the oracle shows the true top k (by CTR at position 0), best first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamlearn.simulator.surfaces import Truth


def rank(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores``, best first; ties keep candidate order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def ctr_table(truth: Truth, user: int, candidates: np.ndarray, k: int) -> np.ndarray:
    """True CTR of every candidate at every shown position: shape ``(n, k)``."""
    return truth.true_ctr(user, candidates[:, None], np.arange(k)[None, :])


@dataclass(frozen=True)
class ExpectedCtr:
    """Expected CTR per shown item of three policies on one request."""

    model: float
    random: float
    oracle: float


def expected_ctr(table: np.ndarray, order: np.ndarray) -> float:
    """Mean true CTR of showing candidates ``order`` at positions ``0..len(order)-1``."""
    return float(table[order, np.arange(len(order))].mean())


def compare(table: np.ndarray, order: np.ndarray) -> ExpectedCtr:
    """Expected CTR of ``order`` next to random ranking and the oracle, same candidates."""
    oracle = rank(table[:, 0], table.shape[1])
    return ExpectedCtr(
        model=expected_ctr(table, order),
        random=float(table.mean()),
        oracle=expected_ctr(table, oracle),
    )
