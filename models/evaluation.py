"""Per-version evaluation: AUC, NE and calibration of one model version, mergeable and
stored as data.

:class:`ScoreTally` accumulates labels and predicted probabilities: count, positives,
sums of predictions and of log loss (so NE and calibration are exact), and two score
histograms over :data:`BINS` bins in logit space for AUC (pairs whose logits differ by
less than 16 / ``BINS`` count as ties: AUC within ~1e-3). It serialises to a small
JSON-safe dict (only the occupied bins) and back, and merges, so a trainer can keep
one per version in its snapshot and resume it after a restart.

:class:`VersionEvaluation` holds a model's tallies per version and per traffic:

* ``served``: the scores each version gave on the requests it answered, against their
  labels (``served_version``/``served_score`` of each training example);
* ``shadow``: the same for a version scored as a shadow beside production
  (``shadow_version``/``shadow_score``);
* ``progressive``: predict-before-learn of the learner between the previous version and
  this one (what this version's learner scored on examples it had not yet learned);
* ``replayed``: the part of ``progressive`` on examples serving never scored (impressions
  of a replayed log), kept apart from served traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np

from streamlearn.models.errors import ModelError

#: Logit bins of the AUC histograms, over [-LOGIT_RANGE, LOGIT_RANGE].
BINS: Final = 512
LOGIT_RANGE: Final = 8.0
_EPS = 1e-15
#: The traffics a version is evaluated on (see the module docstring).
TRAFFICS: Final = ("served", "shadow", "progressive", "replayed")


def _bins(p: np.ndarray) -> np.ndarray:
    pc = np.clip(p, _EPS, 1.0 - _EPS)
    logit = np.clip(np.log(pc) - np.log1p(-pc), -LOGIT_RANGE, LOGIT_RANGE)
    b = ((logit + LOGIT_RANGE) * (BINS / (2 * LOGIT_RANGE))).astype(np.int64)
    return np.minimum(b, BINS - 1)


class ScoreTally:
    """Labels and predictions of one version on one traffic (see the module docstring)."""

    __slots__ = ("count", "neg", "pos", "positives", "sum_loss", "sum_p")

    def __init__(self) -> None:
        self.count = 0
        self.positives = 0.0
        self.sum_p = 0.0
        self.sum_loss = 0.0
        self.pos = np.zeros(BINS, np.int64)
        self.neg = np.zeros(BINS, np.int64)

    def update(self, y: np.ndarray, p: np.ndarray) -> None:
        """Add labels ``y`` (0/1) and probabilities ``p`` of the same length."""
        y = np.asarray(y, np.float64).reshape(-1)
        p = np.asarray(p, np.float64).reshape(-1)
        if y.shape != p.shape:
            raise ModelError(f"y and p must have the same length, got {y.size} and {p.size}")
        if not y.size:
            return
        pc = np.clip(p, _EPS, 1.0 - _EPS)
        self.count += int(y.size)
        self.positives += float(y.sum())
        self.sum_p += float(p.sum())
        self.sum_loss += float(-(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)).sum())
        b = _bins(p)
        positive = y > 0
        np.add.at(self.pos, b[positive], 1)
        np.add.at(self.neg, b[~positive], 1)

    def merge(self, other: ScoreTally) -> None:
        """Add ``other``'s examples to this tally."""
        self.count += other.count
        self.positives += other.positives
        self.sum_p += other.sum_p
        self.sum_loss += other.sum_loss
        self.pos += other.pos
        self.neg += other.neg

    @property
    def auc(self) -> float | None:
        """ROC AUC from the histograms; ``None`` until both classes are seen."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return None
        below = np.cumsum(self.neg) - self.neg
        return float((self.pos * (below + 0.5 * self.neg)).sum()) / (n_pos * n_neg)

    @property
    def logloss(self) -> float | None:
        """Mean log loss."""
        return self.sum_loss / self.count if self.count else None

    @property
    def ne(self) -> float | None:
        """Normalized entropy: log loss over the entropy of the observed base rate."""
        if not self.count:
            return None
        rate = self.positives / self.count
        if not 0.0 < rate < 1.0:
            return None
        h = -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))
        return self.sum_loss / self.count / h

    @property
    def calibration(self) -> float | None:
        """Mean predicted probability over the observed rate (1.0: calibrated)."""
        return self.sum_p / self.positives if self.positives > 0 else None

    def report(self) -> dict[str, Any]:
        """``count``, ``positives``, ``auc``, ``logloss``, ``ne``, ``calibration``."""
        return {
            "count": self.count,
            "positives": int(self.positives),
            "auc": self.auc,
            "logloss": self.logloss,
            "ne": self.ne,
            "calibration": self.calibration,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state: the sums and the occupied bins as ``[bin, pos, neg]``."""
        occupied = np.flatnonzero(self.pos + self.neg)
        return {
            "count": self.count,
            "positives": self.positives,
            "sum_p": self.sum_p,
            "sum_loss": self.sum_loss,
            "bins": [[int(i), int(self.pos[i]), int(self.neg[i])] for i in occupied],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreTally:
        """Inverse of :meth:`to_dict`; :class:`ModelError` when it is not one."""
        t = cls()
        try:
            t.count = int(data["count"])
            t.positives = float(data["positives"])
            t.sum_p = float(data["sum_p"])
            t.sum_loss = float(data["sum_loss"])
            for i, pos, neg in data["bins"]:
                t.pos[int(i)] = int(pos)
                t.neg[int(i)] = int(neg)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"expected a score tally, got {str(data)[:80]!r}: {exc!r}") from None
        return t


class VersionEvaluation:
    """A model's tallies per version and traffic, the newest ``keep`` versions only."""

    def __init__(self, keep: int = 32) -> None:
        if keep < 1:
            raise ModelError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.tallies: dict[int, dict[str, ScoreTally]] = {}
        #: versions whose tallies changed since :meth:`take_changed`
        self._changed: set[int] = set()

    def tally(self, version: int, traffic: str) -> ScoreTally:
        """The tally of ``version`` on ``traffic`` (created empty)."""
        if traffic not in TRAFFICS:
            raise ModelError(f"traffic must be one of {TRAFFICS}, got {traffic!r}")
        per = self.tallies.setdefault(int(version), {})
        t = per.get(traffic)
        if t is None:
            t = per[traffic] = ScoreTally()
        return t

    def add(self, traffic: str, versions: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
        """Add examples grouped by their version (``versions[i]`` scored ``p[i]``)."""
        versions = np.asarray(versions, np.int64)
        for v in np.unique(versions):
            sel = versions == v
            self.tally(int(v), traffic).update(y[sel], p[sel])
            self._changed.add(int(v))
        self._trim()

    def set(self, version: int, traffic: str, tally: ScoreTally) -> None:
        """Replace ``version``'s tally on ``traffic``."""
        self.tallies.setdefault(int(version), {})[traffic] = tally
        self._changed.add(int(version))
        self._trim()

    def _trim(self) -> None:
        for v in sorted(self.tallies)[: max(0, len(self.tallies) - self.keep)]:
            del self.tallies[v]
            self._changed.discard(v)

    def take_changed(self) -> list[int]:
        """The versions changed since the last call, ascending (then forgotten)."""
        out = sorted(v for v in self._changed if v in self.tallies)
        self._changed.clear()
        return out

    def report(self, version: int) -> dict[str, dict[str, Any]]:
        """``{traffic: report}`` of ``version`` (only the traffics it has)."""
        return {k: t.report() for k, t in sorted(self.tallies.get(int(version), {}).items())}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-safe state (version numbers as strings)."""
        return {
            str(v): {k: t.to_dict() for k, t in per.items()}
            for v, per in sorted(self.tallies.items())
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, keep: int = 32) -> VersionEvaluation:
        """Inverse of :meth:`to_dict` (``None``: empty)."""
        ev = cls(keep)
        for v, per in (data or {}).items():
            for traffic, t in per.items():
                if traffic in TRAFFICS:
                    ev.tallies.setdefault(int(v), {})[traffic] = ScoreTally.from_dict(t)
        ev._trim()
        return ev

    def versions(self) -> Iterable[int]:
        """The versions held, ascending."""
        return sorted(self.tallies)
