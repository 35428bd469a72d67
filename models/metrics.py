"""Progressive (predict-then-learn) evaluation: AUC, log loss, NE, calibration, drift.

Each metric is given overall and over a sliding window of the last ``window`` examples
(``window_auc`` …). Overall AUC comes from two score histograms over 65,536 bins in logit
space (bounded memory; pairs whose logits differ by less than ~5e-4 count as ties, so the
error is far below 1e-3); window AUC is exact (ranks, ties averaged).

A metric that is undefined returns ``None``: AUC until both classes have been seen,
NE and calibration while the base rate is 0 (or 1 for NE), everything while empty.

Drift: an ADWIN detector (:mod:`streamlearn.models.drift`) watches the log-loss stream,
fed with the mean loss of each chunk of ``drift_chunk`` examples (one ADWIN update per
chunk keeps it cheap);
:meth:`ProgressiveMetrics.update` returns ``True`` when it signals a change, and
``drifts`` / ``last_drift_at`` record the events.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamlearn.models.drift import Adwin
from streamlearn.models.errors import ModelError

_EPS = 1e-15
_LOGIT_RANGE = 16.0
_BINS = 1 << 16


def _entropy(rate: float) -> float | None:
    if not 0.0 < rate < 1.0:
        return None
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def _logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def exact_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Exact ROC AUC (ties count one half); ``None`` unless both classes are present."""
    pos = int(np.count_nonzero(y))
    neg = y.shape[0] - pos
    if pos == 0 or neg == 0:
        return None
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct score.
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][y > 0].sum())
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


class ProgressiveMetrics:
    """Running metrics of a prediction stream (see the module docstring)."""

    def __init__(self, window: int = 10_000, drift_chunk: int = 100, drift_delta: float = 0.002):
        if window < 1 or drift_chunk < 1:
            raise ModelError(
                f"window and drift_chunk must be >= 1, got window={window}, "
                f"drift_chunk={drift_chunk}"
            )
        self.window = window
        self.count = 0
        self._sum_y = 0.0
        self._sum_p = 0.0
        self._sum_loss = 0.0
        self._hist_pos = np.zeros(_BINS, dtype=np.int64)
        self._hist_neg = np.zeros(_BINS, dtype=np.int64)
        self._win_y = np.zeros(window, dtype=np.float64)
        self._win_p = np.zeros(window, dtype=np.float64)
        self._win_next = 0
        self._win_filled = 0
        self._drift_chunk = drift_chunk
        self._pending_loss = np.zeros(0, dtype=np.float64)
        self._adwin = Adwin(delta=drift_delta)
        self.drifts = 0
        self.last_drift_at: int | None = None

    # -- updates -----------------------------------------------------------------
    def update(self, y: np.ndarray, p: np.ndarray) -> bool:
        """Add labels ``y`` (0/1) and predicted probabilities ``p``; ``True`` on drift."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if y.shape != p.shape:
            raise ModelError(
                f"y and p must have the same length, got {y.shape[0]} and {p.shape[0]}"
            )
        if not np.all((y == 0.0) | (y == 1.0)):
            raise ModelError(f"labels must be 0 or 1, got values {np.unique(y)[:5].tolist()}")
        if not np.all((p >= 0.0) & (p <= 1.0)):
            raise ModelError("probabilities must lie in [0, 1], got values outside (or NaN)")
        if y.size == 0:
            return False
        loss = _logloss(y, p)
        self.count += y.size
        self._sum_y += float(y.sum())
        self._sum_p += float(p.sum())
        self._sum_loss += float(loss.sum())
        pc = np.clip(p, _EPS, 1.0 - _EPS)
        logit = np.clip(np.log(pc) - np.log1p(-pc), -_LOGIT_RANGE, _LOGIT_RANGE)
        bins = ((logit + _LOGIT_RANGE) * (_BINS / (2 * _LOGIT_RANGE))).astype(np.int64)
        np.minimum(bins, _BINS - 1, out=bins)
        positive = y > 0
        np.add.at(self._hist_pos, bins[positive], 1)
        np.add.at(self._hist_neg, bins[~positive], 1)
        self._push_window(y, p)
        return self._feed_drift(loss)

    def _push_window(self, y: np.ndarray, p: np.ndarray) -> None:
        if y.size >= self.window:
            y, p = y[-self.window :], p[-self.window :]
        positions = (self._win_next + np.arange(y.size)) % self.window
        self._win_y[positions] = y
        self._win_p[positions] = p
        self._win_next = int((self._win_next + y.size) % self.window)
        self._win_filled = min(self.window, self._win_filled + y.size)

    def _feed_drift(self, loss: np.ndarray) -> bool:
        self._pending_loss = np.concatenate([self._pending_loss, loss])
        chunk = self._drift_chunk
        if self._pending_loss.size < chunk:
            return False
        usable = self._pending_loss.size // chunk * chunk
        means = self._pending_loss[:usable].reshape(-1, chunk).mean(axis=1)
        self._pending_loss = self._pending_loss[usable:]
        detected = False
        for m in means.tolist():
            self._adwin.update(m)
            if self._adwin.drift_detected:
                detected = True
        if detected:
            self.drifts += 1
            self.last_drift_at = self.count
        return detected

    # -- overall -----------------------------------------------------------------
    @property
    def auc(self) -> float | None:
        """Overall ROC AUC (histogram, |error| < 1e-3); ``None`` until both classes seen."""
        pos_total = int(self._hist_pos.sum())
        neg_total = int(self._hist_neg.sum())
        if pos_total == 0 or neg_total == 0:
            return None
        neg_below = np.cumsum(self._hist_neg) - self._hist_neg
        wins = float((self._hist_pos * (neg_below + 0.5 * self._hist_neg)).sum())
        return wins / (pos_total * neg_total)

    @property
    def logloss(self) -> float | None:
        """Mean log loss (probabilities clipped to [1e-15, 1 - 1e-15])."""
        return _ratio(self._sum_loss, self.count)

    @property
    def ne(self) -> float | None:
        """Normalized entropy: log loss / entropy of the observed base rate."""
        if self.count == 0:
            return None
        h = _entropy(self._sum_y / self.count)
        return None if h is None else self._sum_loss / self.count / h

    @property
    def calibration(self) -> float | None:
        """Mean predicted probability / observed positive rate (1.0 is calibrated)."""
        return _ratio(self._sum_p, self._sum_y)

    # -- window ------------------------------------------------------------------
    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        n = self._win_filled
        return self._win_y[:n], self._win_p[:n]

    @property
    def window_count(self) -> int:
        """Examples in the sliding window."""
        return self._win_filled

    @property
    def window_auc(self) -> float | None:
        """Exact AUC over the window; ``None`` unless both classes are in it."""
        return exact_auc(*self._window())

    @property
    def window_logloss(self) -> float | None:
        """Mean log loss over the window."""
        y, p = self._window()
        return float(_logloss(y, p).mean()) if y.size else None

    @property
    def window_ne(self) -> float | None:
        """Normalized entropy over the window (base rate of the window)."""
        y, p = self._window()
        h = _entropy(float(y.mean())) if y.size else None
        return None if h is None else float(_logloss(y, p).mean()) / h

    @property
    def window_calibration(self) -> float | None:
        """Mean predicted / observed rate over the window."""
        y, p = self._window()
        return _ratio(float(p.sum()), float(y.sum()))

    def report(self) -> dict[str, Any]:
        """Every metric in one JSON-safe dict (``None`` where undefined)."""
        return {
            "count": self.count,
            "auc": self.auc,
            "logloss": self.logloss,
            "ne": self.ne,
            "calibration": self.calibration,
            "window_count": self.window_count,
            "window_auc": self.window_auc,
            "window_logloss": self.window_logloss,
            "window_ne": self.window_ne,
            "window_calibration": self.window_calibration,
            "drifts": self.drifts,
            "last_drift_at": self.last_drift_at,
        }
