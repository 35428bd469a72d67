"""One learner trained by several ranks: how their states are brought back into step.

Each rank of a trainer learns its own share of the examples, one at a time, on its own
copy of the model; at a *sync round* every copy becomes the same. A learner says how each
of its state arrays combines (``sync_rules``):

- :data:`SUM`: the state at the last round plus every rank's change since (its delta):
  an array of per-example terms that only add up, such as FTRL's ``n`` and Adagrad's
  accumulators (squared gradients), which are then exactly what one learner would hold.
- :data:`MEAN`: plus the mean of the deltas of the ranks that changed each coordinate
  (model averaging): the factorization machine's weights and factors.
- :data:`ROOT`: plus those deltas summed and divided by the square root of their number:
  FTRL's ``z``. Per coordinate, FTRL's weight is ``z`` over ``√n`` (scaled), so once it
  has settled, ``z`` grows as ``√n``: ``k`` ranks that changed a coordinate, each with
  ``1/k`` of its examples, hold ``z`` of ``√k`` times less each, and this sum over
  ``√k`` with ``n`` summed gives the weight one learner would have; a plain sum gives it
  ``√k`` times too large, and each rank's steps from the same stale weights add up
  (``bench/bench_ranks.py``: summing fell apart at four ranks, the simulator's AUC
  0.768 → 0.576; the mean learns a shared coordinate at ``1/k`` the pace). A
  coordinate only one rank changed (a user, an item: most of a hashed model) keeps that
  rank's learning whole under every rule.
- :data:`MAX`: the element-wise maximum (the normaliser's largest ``|x|`` seen).

:class:`SyncState` keeps a learner's state as it was at the last round and what learning
touched since; a round exchanges either the touched rows (:meth:`SyncState.rows`,
:meth:`SyncState.apply_rows`: a sparse round) or whole arrays with a count per coordinate
(:meth:`SyncState.buffers`, :meth:`SyncState.apply`: a dense all-reduce), whichever
moves fewer bytes, and writes the result into the learner's arrays in place. Nothing
here talks to another process: the trainer's ranks
(``streamlearn.streams.learning.ranks``) move the buffers.

A dense round reduces ``8 × (size of the state + one count per coordinate)`` bytes
whatever the examples since the last one (FTRL over ``2**18`` coordinates: 8 MiB); a
sparse one moves ``8 × (1 + row width)`` bytes per coordinate each rank changed (FTRL:
32 bytes), so rounds every few thousand examples stay small whatever ``hash_bits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from streamlearn.models.errors import ModelError

#: A state array that is a sum of per-example terms (Adagrad's and FTRL's squared
#: gradients): rounds add every rank's delta.
SUM: Final = "sum"
#: A state array of steps (weights): rounds add the mean of the deltas of the ranks that
#: changed each coordinate (model averaging).
MEAN: Final = "mean"
#: FTRL's ``z``: rounds add the deltas of the ranks that changed each coordinate, summed
#: and divided by the square root of their number (module docstring).
ROOT: Final = "root"
#: A state array that only grows by maxima: rounds take the element-wise maximum.
MAX: Final = "max"
#: Every rule, the ones combining deltas first.
RULES: Final = (SUM, MEAN, ROOT, MAX)


def sync_rules(learner: Any) -> dict[str, str]:
    """How each of ``learner``'s state arrays combines across ranks; ``ModelError`` when
    it cannot be trained by several ranks (a learner without rules, or an array without
    one)."""
    rules = getattr(learner, "sync_rules", None)
    arrays = getattr(learner, "state_arrays", None)
    if rules is None or arrays is None:
        raise ModelError(
            f"the {learner.name!r} learner cannot be trained by several ranks: it says "
            "nothing of how its state combines (ranks train ftrl and fm)"
        )
    out: dict[str, str] = dict(rules())
    names = set(arrays())
    if set(out) != names or not set(out.values()) <= set(RULES):
        raise ModelError(
            f"the {learner.name!r} learner's sync rules {out} do not cover its state "
            f"arrays {sorted(names)} with {' or '.join(map(repr, RULES))}"
        )
    return out


class SyncState:
    """A learner's state at the last sync round, and what a round exchanges.

    Every state array is indexed by hashed coordinate on its first axis (a row per
    coordinate). A round either reduces whole arrays (:meth:`buffers`, :meth:`apply`:
    a dense all-reduce, ``dense_bytes``) or exchanges only the rows learning changed
    (:meth:`touched`, :meth:`rows`, :meth:`apply_rows`: ``row_bytes`` per coordinate and
    rank), whichever moves fewer bytes: a few thousand examples touch a few thousand of
    FTRL's 262,144 coordinates.
    """

    def __init__(self, learner: Any) -> None:
        self.learner = learner
        self.rules = sync_rules(learner)
        arrays = self._arrays()
        dims = {a.shape[0] for a in arrays.values()}
        if len(dims) != 1:
            raise ModelError(
                f"the {learner.name!r} learner's state arrays do not share a first axis "
                f"(a row per coordinate): shapes {[a.shape for a in arrays.values()]}"
            )
        self.dim = dims.pop()
        self._delta = sorted(k for k, r in self.rules.items() if r != MAX)
        self._max = self._names(MAX)
        self._touched: list[np.ndarray] = []
        self.rebase()

    def _arrays(self) -> Mapping[str, np.ndarray]:
        return self.learner.state_arrays()

    def _share(self, name: str, ranks_of: np.ndarray) -> np.ndarray:
        """What each rank's delta of array ``name`` counts for, per coordinate changed by
        ``ranks_of`` ranks (>= 1)."""
        rule = self.rules[name]
        if rule == SUM:
            return np.ones_like(ranks_of)
        return 1.0 / (ranks_of if rule == MEAN else np.sqrt(ranks_of))

    def _names(self, rule: str) -> list[str]:
        return sorted(k for k, r in self.rules.items() if r == rule)

    def _width(self, name: str) -> int:
        shape = self._base[name].shape
        return int(np.prod(shape[1:])) if len(shape) > 1 else 1

    @property
    def dense_bytes(self) -> int:
        """Bytes of the buffers a dense round reduces."""
        return sum(a.size * 8 for a in self._base.values()) + 8 * self.dim + 8 * self.dim

    @property
    def row_bytes(self) -> int:
        """Bytes one changed coordinate costs a sparse round (its index and rows)."""
        return 8 * (1 + sum(self._width(k) for k in self.rules))

    # -- sparse rounds -------------------------------------------------------------------
    def touch(self, idx: np.ndarray, val: np.ndarray) -> None:
        """Learning a featurised batch changed (at most) the rows of its non-zero slots."""
        self._touched.append(np.asarray(idx)[np.asarray(val) != 0])

    def touched(self) -> np.ndarray:
        """The coordinates learned since the last round (sorted, int64)."""
        if not self._touched:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(self._touched)).astype(np.int64)

    def rows(self, coords: np.ndarray) -> np.ndarray:
        """At ``coords``: the delta arrays' deltas since the last round, then the ``MAX``
        arrays' values, one row per coordinate (float64)."""
        arrays = self._arrays()
        n = len(coords)
        parts = [
            (arrays[k][coords].astype(np.float64) - self._base[k][coords]).reshape(
                n, self._width(k)
            )
            for k in self._delta
        ]
        parts += [
            arrays[k][coords].astype(np.float64).reshape(n, self._width(k)) for k in self._max
        ]
        return np.hstack(parts) if parts else np.zeros((n, 0))

    def apply_rows(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Every rank's ``(coords, rows)``: deltas added (each by its rule's share of the
        ranks that changed the coordinate), maxima taken, into the base and then into the learner's
        arrays (only the rows any rank changed)."""
        arrays = self._arrays()
        # how many ranks changed each coordinate (the rules' shares, below)
        ranks_of = np.zeros(self.dim)
        for coords, _ in parts:
            ranks_of[coords] += 1.0
        for coords, rows in parts:
            at = 0
            for k in self._delta:
                w = self._width(k)
                base = self._base[k]
                d = rows[:, at : at + w] * self._share(k, ranks_of[coords])[:, None]
                base[coords] += d.reshape(base[coords].shape)
                at += w
            for k in self._max:
                w = self._width(k)
                base = self._base[k]
                base[coords] = np.maximum(
                    base[coords], rows[:, at : at + w].reshape(base[coords].shape)
                )
                at += w
        changed = np.unique(np.concatenate([c for c, _ in parts])) if parts else np.zeros(0, int)
        for k, a in arrays.items():
            a[changed] = self._base[k][changed]
        self._touched = []

    # -- dense rounds --------------------------------------------------------------------
    def buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This rank's deltas of the delta arrays since the last round, ``MAX`` values and which
        coordinates it changed (1.0), flat float64: a dense round sums the first and the
        last, and takes the maximum of the second."""
        arrays = self._arrays()
        deltas = [(arrays[k].astype(np.float64) - self._base[k]).ravel() for k in self._delta]
        maxima = [arrays[k].astype(np.float64).ravel() for k in self._max]
        changed = np.zeros(self.dim)
        changed[self.touched()] = 1.0
        return _flat(deltas), _flat(maxima), changed

    def apply(self, deltas: np.ndarray, maxima: np.ndarray, ranks_of: np.ndarray) -> None:
        """Write a dense round's result (every rank's deltas summed, maxima reduced, the
        ranks that changed each coordinate counted) into the learner's arrays, in place;
        it becomes the base of the next round."""
        arrays = self._arrays()
        ranks_of = np.maximum(ranks_of, 1.0)
        at = 0
        for k in self._delta:
            a = arrays[k]
            d = deltas[at : at + a.size].reshape(self.dim, -1) * self._share(k, ranks_of)[:, None]
            a[...] = (self._base[k].reshape(self.dim, -1) + d).reshape(a.shape)
            at += a.size
        at = 0
        for k in self._max:
            a = arrays[k]
            a[...] = maxima[at : at + a.size].reshape(a.shape)
            at += a.size
        self.rebase()

    def rebase(self) -> None:
        """Take the learner's state as it is now as the base (after a load or a switch)."""
        self._base = {k: a.astype(np.float64) for k, a in self._arrays().items()}
        self._touched = []


def _flat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)
