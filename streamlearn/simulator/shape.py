"""The shape of an activity log, measured as an outside reader would.

What makes real click logs hard for learners, in numbers:

* heavy-tailed items: the share of impressions that go to the top 1% (and 10%) of items
  (a uniform catalog gives about 1% and 10%);
* heavy-tailed users: the share of events that come from the top 1% of users;
* sessions: a user's requests, split wherever the user was silent for more than
  ``session_gap_s``, give the session lengths (requests per session);
* burstiness: the coefficient of variation of the gaps between one user's consecutive
  requests, the median over users with at least ``MIN_GAPS`` gaps (1 for independent,
  Poisson arrivals; above 1 when requests come in bursts).

:func:`describe` works on plain arrays; :class:`ShapeTally` collects them as a producer
publishes (bounded: the newest ``max_requests`` requests); :func:`shape_of_events`
measures decoded events read back from a topic.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from streamlearn.streams.contracts import ActivityEvent

#: Silence (seconds) that ends a session when sessions are cut from the outside.
SESSION_GAP_S = 5.0
#: Users with fewer gaps between requests do not count in the burstiness.
MIN_GAPS = 5


def top_share(counts: Iterable[int], fraction: float = 0.01) -> float | None:
    """Share of the total held by the top ``fraction`` of entries (at least one entry)."""
    c = np.sort(np.fromiter(counts, dtype=np.float64))[::-1]
    if c.size == 0 or c.sum() == 0:
        return None
    k = max(1, math.ceil(fraction * c.size))
    return float(c[:k].sum() / c.sum())


def session_lengths(users: np.ndarray, ts: np.ndarray, gap_s: float) -> np.ndarray:
    """Requests per session: each user's requests (``users[i]`` at ``ts[i]``) in time
    order, cut wherever the user was silent for more than ``gap_s``."""
    if users.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((ts, users))
    u, t = users[order], ts[order]
    new = np.ones(u.size, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (np.diff(t) > gap_s)
    starts = np.flatnonzero(new)
    return np.diff(np.append(starts, u.size))


def gap_cv(users: np.ndarray, ts: np.ndarray, min_gaps: int = MIN_GAPS) -> float | None:
    """Median over users (with ``min_gaps`` gaps or more) of the coefficient of variation
    of the gaps between the user's consecutive requests; ``None`` when no user has."""
    order = np.lexsort((ts, users))
    u, t = users[order], ts[order]
    same = u[1:] == u[:-1]
    gaps, owner = np.diff(t)[same], u[1:][same]
    cvs = []
    for user in np.unique(owner):
        g = gaps[owner == user]
        if g.size >= min_gaps and g.mean() > 0:
            cvs.append(g.std() / g.mean())
    return float(np.median(cvs)) if cvs else None


def describe(
    users: np.ndarray,
    ts: np.ndarray,
    impressions: Mapping[str, Counter[str]],
    events_by_user: Counter[str],
    session_gap_s: float = SESSION_GAP_S,
) -> dict[str, Any]:
    """The shape of a log: requests (``users[i]`` made one at ``ts[i]``), impressions per
    item by surface, and events per user. JSON-safe."""
    lengths = session_lengths(users, ts, session_gap_s)
    out: dict[str, Any] = {
        "requests": int(users.size),
        "users": len(events_by_user),
        "top1pct_users_event_share": _round(top_share(events_by_user.values(), 0.01)),
        "top10pct_users_event_share": _round(top_share(events_by_user.values(), 0.10)),
        "items_shown": {s: len(c) for s, c in impressions.items()},
        "top1pct_items_impression_share": {
            s: _round(top_share(c.values(), 0.01)) for s, c in impressions.items()
        },
        "top10pct_items_impression_share": {
            s: _round(top_share(c.values(), 0.10)) for s, c in impressions.items()
        },
        "session_gap_s": session_gap_s,
        "sessions": int(lengths.size),
        "session_requests_mean": _round(float(lengths.mean())) if lengths.size else None,
        "session_requests_p50": int(np.quantile(lengths, 0.5)) if lengths.size else None,
        "session_requests_p90": int(np.quantile(lengths, 0.9)) if lengths.size else None,
        "session_requests_max": int(lengths.max()) if lengths.size else None,
        "single_request_sessions_share": (
            _round(float((lengths == 1).mean())) if lengths.size else None
        ),
        "user_gap_cv": _round(gap_cv(users, ts)),
    }
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


class ShapeTally:
    """Collects what :func:`describe` needs while a producer publishes."""

    def __init__(self, max_requests: int = 200_000) -> None:
        self._requests: deque[tuple[int, float]] = deque(maxlen=max_requests)
        self._user_codes: dict[str, int] = {}
        self.impressions: dict[str, Counter[str]] = {}
        self.events_by_user: Counter[str] = Counter()

    def request(self, user_id: str, ts: float) -> None:
        """One request by ``user_id`` at ``ts`` seconds."""
        code = self._user_codes.setdefault(user_id, len(self._user_codes))
        self._requests.append((code, ts))

    def event(self, user_id: str, type_: str, surface: str, item_id: str) -> None:
        """One published event."""
        self.events_by_user[user_id] += 1
        if type_ == "impression":
            self.impressions.setdefault(surface, Counter())[item_id] += 1

    def snapshot(self, session_gap_s: float = SESSION_GAP_S) -> dict[str, Any]:
        """The shape of what was collected."""
        arr = np.array(self._requests, dtype=np.float64).reshape(-1, 2)
        return describe(
            arr[:, 0].astype(np.int64),
            arr[:, 1],
            self.impressions,
            self.events_by_user,
            session_gap_s,
        )


def shape_of_events(
    events: Iterable[ActivityEvent], session_gap_s: float = SESSION_GAP_S
) -> dict[str, Any]:
    """The shape of decoded activity events (a request's time: its first impression's)."""
    tally = ShapeTally(max_requests=10**9)
    first: dict[str, tuple[str, float]] = {}
    for ev in events:
        tally.event(ev.user_id, ev.type, ev.surface, ev.item_id)
        if ev.type == "impression":
            seen = first.get(ev.request_id)
            if seen is None or ev.ts < seen[1]:
                first[ev.request_id] = (ev.user_id, ev.ts)
    for user_id, ts in first.values():
        tally.request(user_id, ts)
    return tally.snapshot(session_gap_s)
