"""What the simulator counts: requests, acknowledged events, CTRs and predict latency.

Counted per surface (``feed``, ``ads``) and in total. Every count here is also mirrored
into the Prometheus metrics of ``streamlearn.simulator.metrics``; :meth:`SimStats.snapshot` is the
``stats()`` dict.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import numpy as np

from streamlearn.simulator import metrics as m
from streamlearn.simulator.example import example
from streamlearn.simulator.ranking import ExpectedCtr
from streamlearn.simulator.scoring import OUTCOMES, Scored
from streamlearn.simulator.shape import ShapeTally

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

    @property
    def requests(self) -> int:
        """Requests recorded."""
        return self._n

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


class SurfaceStats:
    """Requests, outcomes, impressions, clicks, CTRs and latency of one surface."""

    def __init__(self, name: str, latency_window: int, recent_requests: int) -> None:
        self.name = name
        self.requests: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.ctr = CtrTally(recent_requests)
        #: requests ranked at random because serving gave no scores
        self.fallback = CtrTally(1)
        self.latency = LatencyWindow(latency_window)
        # labelled children looked up once: ~20 µs per event saved on the hot path
        self._requests = {o: m.REQUESTS.labels(name, o) for o in OUTCOMES}
        self._produced = {t: m.EVENTS_PRODUCED.labels(name, t) for t in example().schema.types}
        self._latency = m.PREDICT_LATENCY.labels(name)

    def request(self, outcome: str, latency_s: float | None) -> None:
        """Count one predict call; ``latency_s`` of a served one."""
        self.requests[outcome] += 1
        self._requests[outcome].inc()
        if latency_s is not None:
            self.latency.add(latency_s)
            self._latency.observe(latency_s)

    def acked(self, type_: str) -> None:
        """Count one acknowledged event."""
        self.events[type_] += 1
        self._produced[type_].inc()

    def snapshot(self) -> dict[str, Any]:
        """This surface's figures (JSON-safe)."""
        requests = sum(self.requests.values())
        served = self.requests["served"]
        p50, p99 = self.latency.quantile(0.5), self.latency.quantile(0.99)
        fallback = self.fallback.since_start()
        return {
            "requests": requests,
            "served": served,
            "serve_errors": requests - served,
            "requests_by_outcome": dict(self.requests),
            "impressions": self.events["impression"],
            "clicks": self.events["click"],
            "engagements": sum(self.events[t] for t in example().schema.engagements),
            **{f"ctr_{p}": v for p, v in self.ctr.since_start().items()},
            **{f"ctr_{p}_recent": v for p, v in self.ctr.recent().items()},
            "fallback_requests": self.fallback.requests,
            "ctr_fallback": fallback["model"],
            "ctr_fallback_oracle": fallback["oracle"],
            "predict_p50_ms": None if p50 is None else p50 * 1000.0,
            "predict_p99_ms": None if p99 is None else p99 * 1000.0,
        }


class SimStats:
    """Counters of one simulator run, per surface and in total.

    The top-level CTR keys of :meth:`snapshot` (``ctr_model``, ``ctr_random``, …) are the
    feed's, as they were before there were surfaces; ``surfaces`` has each surface's.
    """

    def __init__(
        self,
        latency_window: int = 100_000,
        recent_requests: int = 3000,
        surfaces: tuple[str, ...] = ("feed", "ads"),
    ) -> None:
        self.surfaces = {s: SurfaceStats(s, latency_window, recent_requests) for s in surfaces}
        self.bad_events: Counter[str] = Counter()
        self.events_failed = 0
        self.engagements_scheduled = 0
        self.engagements_dropped = 0
        self.failovers = 0
        self.replica_calls: Counter[tuple[str, str]] = Counter()
        self.pending = 0
        self.latency = LatencyWindow(latency_window)
        self.shape = ShapeTally()

    def request(self, surface: str, scored: Scored) -> None:
        """Count one request on ``surface`` (its latency when served) and every call it
        made to a replica."""
        self.surfaces[surface].request(scored.outcome, scored.latency_s)
        calls = list(scored.failed_over)
        if scored.replica is not None:
            calls.append((scored.replica, scored.outcome))
        for replica, outcome in calls:
            self.replica_calls[(replica, outcome)] += 1
            m.REPLICA_CALLS.labels(replica, outcome).inc()
        if scored.attempts > 1:
            self.failovers += 1
            m.FAILOVERS.inc()
        if scored.latency_s is not None:
            self.latency.add(scored.latency_s)

    def ranked(
        self, surface: str, by_model: bool, shown: int, clicks: int, expected: ExpectedCtr
    ) -> None:
        """Record what the ranking of one request was worth: the model's (served), or a
        random one (serving gave no scores; counted apart, as ``ctr_fallback``)."""
        s = self.surfaces[surface]
        (s.ctr if by_model else s.fallback).add(shown, clicks, expected)

    def acked(self, surface: str, type_: str) -> None:
        """Count one activity event the broker acknowledged."""
        self.surfaces[surface].acked(type_)

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

    def update_gauges(self) -> None:
        """Refresh the CTR and latency-quantile gauges (cheap; call every second or so)."""
        for name, s in self.surfaces.items():
            for gauge, ctrs in ((m.CTR, s.ctr.since_start()), (m.CTR_RECENT, s.ctr.recent())):
                for policy, value in ctrs.items():
                    if value is not None:
                        gauge.labels(name, policy).set(value)
        for gauge, q in ((m.PREDICT_P50, 0.5), (m.PREDICT_P99, 0.99)):
            value = self.latency.quantile(q)
            if value is not None:
                gauge.set(value)

    def snapshot(self, shape: bool = False) -> dict[str, Any]:
        """Every figure of the run as a JSON-safe dict (the ``stats()`` of the simulator).

        ``shape`` adds ``log_shape`` (:mod:`streamlearn.simulator.shape`), which costs a sort of the
        recent requests: the end-of-run stats have it, progress reports do not.
        """
        per = {name: s.snapshot() for name, s in self.surfaces.items()}
        events: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        for s in self.surfaces.values():
            events.update(s.events)
            requests.update(s.requests)
        total = sum(requests.values())
        p50, p99 = self.latency.quantile(0.5), self.latency.quantile(0.99)
        feed = per.get("feed", {})
        out: dict[str, Any] = {
            "requests": total,
            "served": requests["served"],
            "serve_errors": total - requests["served"],
            "requests_by_outcome": dict(requests),
            "events_produced": sum(events.values()),
            "events_by_type": dict(events),
            "impressions": events["impression"],
            "engagements": sum(events[t] for t in example().schema.engagements),
            "hides": events["hide"],
            "bad_events_produced": sum(self.bad_events.values()),
            "events_failed": self.events_failed,
            "engagements_scheduled": self.engagements_scheduled,
            "engagements_dropped": self.engagements_dropped,
            "pending_engagements": self.pending,
            **{k: v for k, v in feed.items() if k.startswith("ctr_")},
            "predict_p50_ms": None if p50 is None else p50 * 1000.0,
            "predict_p99_ms": None if p99 is None else p99 * 1000.0,
            "latency_samples": len(self.latency),
            "failovers": self.failovers,
            "replica_calls": _nested(self.replica_calls),
            "surfaces": per,
        }
        if shape:
            out["log_shape"] = self.shape.snapshot()
        return out


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (replica, outcome), n in sorted(counts.items()):
        out.setdefault(replica, {})[outcome] = n
    return out
