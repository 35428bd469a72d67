"""What the simulator counts: requests, acknowledged events, CTRs and predict latency.

Every count here is also mirrored into the Prometheus metrics of
``simulator.metrics``; :meth:`SimStats.snapshot` is the ``stats()`` dict.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import numpy as np

from simulator import metrics as m
from simulator.ranking import ExpectedCtr
from simulator.scoring import OUTCOMES
from streams.contracts import ENGAGEMENT_TYPES, EVENT_TYPES

POLICIES: Final = ("model", "model_expected", "random", "oracle")


class LatencyWindow:
    """The last ``size`` latencies in a ring buffer; exact quantiles over them."""

    def __init__(self, size: int = 100_000) -> None:
        self._buf = np.empty(size, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def add(self, seconds: float) -> None:
        """Record one latency."""
        self._buf[self._n % len(self._buf)] = seconds
        self._n += 1

    def quantile(self, q: float) -> float | None:
        """The exact ``q`` quantile (linear interpolation), ``None`` before any sample."""
        n = len(self)
        return float(np.quantile(self._buf[:n], q)) if n else None


class CtrTally:
    """CTR per shown item of the four policies, since start and over recent requests.

    Columns: shown items, sampled clicks, and the expected clicks of the model's
    ranking, of random ranking and of the oracle.
    """

    def __init__(self, recent_requests: int = 3000) -> None:
        self._total = np.zeros(5)
        self._recent = np.zeros((recent_requests, 5))
        self._n = 0

    def add(self, shown: int, clicks: int, expected: ExpectedCtr) -> None:
        """Record one served request."""
        row = (
            shown,
            clicks,
            expected.model * shown,
            expected.random * shown,
            expected.oracle * shown,
        )
        self._total += row
        self._recent[self._n % len(self._recent)] = row
        self._n += 1

    def since_start(self) -> dict[str, float | None]:
        """CTR per policy over every served request."""
        return _ctrs(self._total)

    def recent(self) -> dict[str, float | None]:
        """CTR per policy over the most recent served requests."""
        return _ctrs(self._recent.sum(axis=0))


def _ctrs(sums: np.ndarray) -> dict[str, float | None]:
    shown = sums[0]
    if shown == 0:
        return dict.fromkeys(POLICIES)
    return {p: float(v / shown) for p, v in zip(POLICIES, sums[1:], strict=True)}


class SimStats:
    """Counters of one simulator run."""

    def __init__(self, latency_window: int = 100_000, recent_requests: int = 3000) -> None:
        self.requests: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.bad_events: Counter[str] = Counter()
        self.events_failed = 0
        self.engagements_scheduled = 0
        self.engagements_dropped = 0
        self.pending = 0
        self.ctr = CtrTally(recent_requests)
        self.latency = LatencyWindow(latency_window)
        # labelled children looked up once: ~20 µs per event saved on the hot path
        self._produced = {t: m.EVENTS_PRODUCED.labels(t) for t in EVENT_TYPES}
        self._requests = {o: m.REQUESTS.labels(o) for o in OUTCOMES}

    def request(self, outcome: str, latency_s: float | None) -> None:
        """Count one predict call; ``latency_s`` of a served one."""
        self.requests[outcome] += 1
        self._requests[outcome].inc()
        if latency_s is not None:
            self.latency.add(latency_s)
            m.PREDICT_LATENCY.observe(latency_s)

    def acked(self, type_: str) -> None:
        """Count one activity event the broker acknowledged."""
        self.events[type_] += 1
        self._produced[type_].inc()

    def bad_acked(self, kind: str) -> None:
        """Count one malformed event the broker acknowledged."""
        self.bad_events[kind] += 1
        m.BAD_EVENTS_PRODUCED.labels(kind).inc()

    def failed(self) -> None:
        """Count one event the broker did not acknowledge."""
        self.events_failed += 1
        m.EVENTS_FAILED.inc()

    def scheduled(self, n: int) -> None:
        """Count engagements (hides included) scheduled for later publication."""
        self.engagements_scheduled += n

    def dropped(self, n: int) -> None:
        """Count engagements dropped at stop."""
        self.engagements_dropped += n
        m.ENGAGEMENTS_DROPPED.inc(n)

    def set_pending(self, n: int) -> None:
        """Record how many engagements are scheduled."""
        self.pending = n
        m.PENDING_ENGAGEMENTS.set(n)

    def publish_gauges(self) -> None:
        """Refresh the CTR and latency-quantile gauges (cheap; call every second or so)."""
        for gauge, ctrs in ((m.CTR, self.ctr.since_start()), (m.CTR_RECENT, self.ctr.recent())):
            for policy, value in ctrs.items():
                if value is not None:
                    gauge.labels(policy).set(value)
        for gauge, q in ((m.PREDICT_P50, 0.5), (m.PREDICT_P99, 0.99)):
            value = self.latency.quantile(q)
            if value is not None:
                gauge.set(value)

    def snapshot(self) -> dict[str, Any]:
        """Every figure of the run as a JSON-safe dict (the ``stats()`` of the simulator)."""
        requests = sum(self.requests.values())
        served = self.requests["served"]
        ctr, recent = self.ctr.since_start(), self.ctr.recent()
        p50, p99 = self.latency.quantile(0.5), self.latency.quantile(0.99)
        return {
            "requests": requests,
            "served": served,
            "serve_errors": requests - served,
            "requests_by_outcome": dict(self.requests),
            "events_produced": sum(self.events.values()),
            "events_by_type": dict(self.events),
            "impressions": self.events["impression"],
            "engagements": sum(self.events[t] for t in ENGAGEMENT_TYPES),
            "hides": self.events["hide"],
            "bad_events_produced": sum(self.bad_events.values()),
            "events_failed": self.events_failed,
            "engagements_scheduled": self.engagements_scheduled,
            "engagements_dropped": self.engagements_dropped,
            "pending_engagements": self.pending,
            **{f"ctr_{p}": v for p, v in ctr.items()},
            **{f"ctr_{p}_recent": v for p, v in recent.items()},
            "predict_p50_ms": None if p50 is None else p50 * 1000.0,
            "predict_p99_ms": None if p99 is None else p99 * 1000.0,
            "latency_samples": len(self.latency),
        }
