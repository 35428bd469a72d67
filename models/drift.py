"""ADWIN, the adaptive-window change detector (Bifet & Gavaldà, 2007), on a stream of floats.

Written here rather than taken from river (whose ``river.drift.ADWIN`` it follows: the
same parameters, the same bound, the same exponential histogram) because the online
trainer of the core install needs only this detector, and river brings SciPy (~150 MB)
into every trainer. ``tests/unit/models/test_drift.py`` checks it against river's on the
same streams.

The window is summarised in an exponential histogram: row ``i`` holds at most
``max_buckets`` buckets of ``2**i`` values each (their sum and their sum of squared
deviations), newest values in row 0. Every ``clock`` updates each cut of the window into
an older part ``W0`` and a newer part ``W1`` is tested; when their means differ by more
than the bound, the oldest bucket is dropped and the test runs again. As in river, the
detector starts over from an empty window with the update after a detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamlearn.models.errors import ModelError


@dataclass(slots=True)
class _Bucket:
    total: float
    #: Sum of squared deviations from the bucket's mean.
    variance: float


def _merge(n: float, a: _Bucket, b: _Bucket) -> _Bucket:
    """Two buckets of ``n`` values each, as one of ``2n``."""
    diff = a.total / n - b.total / n
    return _Bucket(a.total + b.total, a.variance + b.variance + n * n * diff * diff / (2 * n))


class Adwin:
    """A change detector on the mean of a stream of floats.

    Parameters
    ----------
    delta
        Confidence of the test (smaller: fewer false alarms, later detections).
    clock
        Test the window every ``clock`` updates.
    max_buckets
        Buckets of each size kept before the oldest two merge.
    min_window_length
        Neither part of a cut may hold fewer values.
    grace_period
        No test until the window holds more values than this.
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ModelError(f"delta must lie in (0, 1), got {delta}")
        if clock < 1 or max_buckets < 1 or min_window_length < 1 or grace_period < 0:
            raise ModelError(
                "clock, max_buckets and min_window_length must be >= 1 and grace_period "
                f">= 0, got {clock}, {max_buckets}, {min_window_length}, {grace_period}"
            )
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        #: Changes detected so far.
        self.detections = 0
        #: Whether the last :meth:`update` detected a change.
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        #: ``_rows[i]``: buckets of ``2**i`` values, oldest first.
        self._rows: list[list[_Bucket]] = [[]]
        self.width = 0
        self.total = 0.0
        #: Sum of squared deviations from the window's mean.
        self.variance = 0.0
        self._tick = 0

    @property
    def estimation(self) -> float:
        """The mean of the window (0 while it is empty)."""
        return self.total / self.width if self.width else 0.0

    def update(self, x: float) -> bool:
        """Add ``x``; ``True`` (also in :attr:`drift_detected`) when a change is detected."""
        if self.drift_detected:
            self._reset()
        self._insert(float(x))
        self._tick += 1
        detected = False
        if self._tick % self.clock == 0 and self.width > self.grace_period:
            while self._shrink_once():
                detected = True
        if detected:
            self.detections += 1
        self.drift_detected = detected
        return detected

    # -- the histogram -----------------------------------------------------------
    def _insert(self, x: float) -> None:
        if self.width:
            mean = self.total / self.width
            self.variance += self.width * (x - mean) * (x - mean) / (self.width + 1)
        self.width += 1
        self.total += x
        self._rows[0].append(_Bucket(x, 0.0))
        size = 1
        for i, row in enumerate(self._rows):
            if len(row) <= self.max_buckets:
                break
            if i + 1 == len(self._rows):
                self._rows.append([])
            # the two oldest of this row are newer than everything in the next one
            self._rows[i + 1].append(_merge(size, row.pop(0), row.pop(0)))
            size *= 2

    def _drop_oldest(self) -> None:
        row = len(self._rows) - 1
        while not self._rows[row]:
            row -= 1
        bucket = self._rows[row].pop(0)
        n = float(1 << row)
        self.width -= int(n)
        self.total -= bucket.total
        if self.width:
            diff = bucket.total / n - self.total / self.width
            self.variance -= bucket.variance + n * self.width * diff * diff / (n + self.width)
            self.variance = max(self.variance, 0.0)
        else:
            self.variance = 0.0
        while len(self._rows) > 1 and not self._rows[-1]:
            self._rows.pop()

    # -- the test ----------------------------------------------------------------
    def _shrink_once(self) -> bool:
        """Test every cut, oldest first; drop the oldest bucket at the first that differs."""
        n0, u0 = 0.0, 0.0
        width, total = float(self.width), self.total
        for row in range(len(self._rows) - 1, -1, -1):
            size = float(1 << row)
            for bucket in self._rows[row]:
                n0 += size
                u0 += bucket.total
                n1 = width - n0
                if n1 <= 0:
                    return False
                if (
                    n0 >= self.min_window_length
                    and n1 >= self.min_window_length
                    and self._differs(n0, n1, u0 / n0 - (total - u0) / n1)
                ):
                    self._drop_oldest()
                    return self.width > 0
        return False

    def _differs(self, n0: float, n1: float, mean_diff: float) -> bool:
        """The ADWIN bound: ``|mean(W0) - mean(W1)| > eps_cut``."""
        delta_prime = math.log(2.0 * math.log(self.width) / self.delta)
        m_recip = 1.0 / (n0 - self.min_window_length + 1) + 1.0 / (n1 - self.min_window_length + 1)
        var = self.variance / self.width
        epsilon = math.sqrt(2.0 * m_recip * var * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        return abs(mean_diff) > epsilon
