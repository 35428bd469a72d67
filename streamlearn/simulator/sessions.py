"""When users come, and how long they stay: requests grouped in sessions.

Real logs are bursts: a user arrives, makes several requests a second or two apart, and
leaves; very active users come back more often *and* stay longer. Here sessions start as
a Poisson process; each picks a user, among those not already in a session and not just
gone, in proportion to ``activity ** (1 - length_exponent)``; the session makes a
geometric number of requests whose mean grows as ``activity ** length_exponent``
(so a user's share of requests follows their activity; the mean over sessions is
``mean_requests``), with exponential gaps, then the user stays away for at least
``min_away_s``. Session arrivals run at ``rate / L`` per second, ``L`` being the mean
expected length of the sessions started so far (busy heavy users are skipped, so it falls
below ``mean_requests``), so requests arrive at ``rate`` per second on average. The
process starts ``warmup_s`` before time 0 (those visits are dropped), so the first
minute already has the steady state's sessions in progress and its request rate.

Time is virtual (seconds since the start), so the sequence of visits depends only on the
seed, the users' activity and ``rate``: the traffic loop maps it onto the wall clock.
``mean_requests = 1``, ``length_exponent = 0`` and ``min_away_s = 0`` give independent
requests (no sessions).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

#: Draws of a user by activity before falling back to an exact draw among free users.
_REDRAWS = 16


@dataclass(frozen=True)
class SessionParams:
    """Session length (requests), gaps between a session's requests and time away."""

    mean_requests: float = 8.0
    length_exponent: float = 0.5
    mean_gap_s: float = 1.0
    min_gap_s: float = 0.2
    min_away_s: float = 5.0
    warmup_s: float = 120.0

    def __post_init__(self) -> None:
        if self.mean_requests < 1:
            raise ValueError(f"mean_requests must be >= 1, got {self.mean_requests}")
        if not 0.0 <= self.length_exponent <= 1.0:
            raise ValueError(f"length_exponent must be in [0, 1], got {self.length_exponent}")
        if min(self.min_gap_s, self.min_away_s, self.warmup_s) < 0 or self.mean_gap_s <= 0:
            raise ValueError(
                "expected mean_gap_s > 0 and min_gap_s, min_away_s, warmup_s >= 0, got "
                f"{self.mean_gap_s}, {self.min_gap_s}, {self.min_away_s}, {self.warmup_s}"
            )


@dataclass(frozen=True)
class Visit:
    """One request: when (virtual seconds), who, in which session, and its rank in it."""

    t: float
    user: int
    session: int
    nth: int


class Sessions:
    """The visits of users with the given ``activity`` shares, ``rate`` requests/s on average.

    ``activity`` holds each user's share of sessions (it sums to 1); ``rng`` is the only
    source of randomness.
    """

    def __init__(
        self,
        activity: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        params: SessionParams | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.params = p = params or SessionParams()
        self.rng = rng
        share = np.asarray(activity, dtype=np.float64)
        share = share / share.sum()
        beta = p.length_exponent
        #: how often each user starts a session, and the mean length of their sessions
        self._activity = share ** (1.0 - beta)
        z = self._activity.sum()
        self._activity /= z
        self._cdf = np.cumsum(self._activity)
        self._mean_length = np.maximum(p.mean_requests * z * share**beta, 1.0)
        self.rate = rate
        self._length_sum = 0.0
        self._next_arrival = -p.warmup_s + rng.exponential(p.mean_requests / rate)
        #: a user may start a session at or after this virtual time (inf: in a session)
        self._free_at = np.full(len(self._activity), -math.inf)
        #: (time, session id, user, nth, remaining requests after this one)
        self._due: list[tuple[float, int, int, int, int]] = []
        self.sessions_started = 0
        while self._peek() < 0:
            self._pop()

    def next(self) -> Visit:
        """The next request in time order."""
        self._peek()
        return self._pop()

    def _peek(self) -> float:
        """Start the sessions that begin before the next due request; its time."""
        while not self._due or self._next_arrival <= self._due[0][0]:
            self._start(self._next_arrival)
            mean_length = self._length_sum / self.sessions_started
            self._next_arrival += self.rng.exponential(mean_length / self.rate)
        return self._due[0][0]

    def _pop(self) -> Visit:
        t, session, user, nth, remaining = heapq.heappop(self._due)
        if remaining:
            heapq.heappush(self._due, (t + self._gap(), session, user, nth + 1, remaining - 1))
        else:
            self._free_at[user] = t + self.params.min_away_s
        return Visit(t, user, session, nth)

    def _gap(self) -> float:
        p = self.params
        return p.min_gap_s + self.rng.exponential(max(p.mean_gap_s - p.min_gap_s, 1e-9))

    def _start(self, t: float) -> None:
        user = self._free_user(t)
        length = int(self.rng.geometric(1.0 / self._mean_length[user]))
        self._length_sum += self._mean_length[user]
        self._free_at[user] = math.inf
        heapq.heappush(self._due, (t, self.sessions_started, user, 0, length - 1))
        self.sessions_started += 1

    def _free_user(self, t: float) -> int:
        """A user free at ``t``, drawn by activity (any user when none is free)."""
        n = len(self._activity)
        for _ in range(_REDRAWS):
            u = min(int(np.searchsorted(self._cdf, self.rng.random(), side="right")), n - 1)
            if self._free_at[u] <= t:
                return u
        weights = np.where(self._free_at <= t, self._activity, 0.0)
        total = weights.sum()
        if total <= 0:  # more concurrent sessions than users: share a user
            return min(int(np.searchsorted(self._cdf, self.rng.random(), side="right")), n - 1)
        return int(self.rng.choice(n, p=weights / total))
