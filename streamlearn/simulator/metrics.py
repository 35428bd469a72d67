"""Prometheus metrics of the simulator (prefix ``streamlearn_simulator_``, base units).

The ``up`` supervisor scrapes these names: keep them stable.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "streamlearn_simulator_requests_total",
    "Prediction requests sent, by surface (feed, ads) and outcome (served, unavailable, "
    "timeout, http_error, bad_reply); every outcome but served falls back to random "
    "ranking.",
    ["surface", "outcome"],
)
REPLICA_CALLS = Counter(
    "streamlearn_simulator_replica_calls_total",
    "Predict calls per serving replica (URL) and outcome, failed-over attempts included.",
    ["replica", "outcome"],
)
FAILOVERS = Counter(
    "streamlearn_simulator_failovers_total",
    "Requests that were retried on another serving replica.",
)
EVENTS_PRODUCED = Counter(
    "streamlearn_simulator_events_produced_total",
    "Activity events published and acknowledged by the broker, by surface and event type.",
    ["surface", "type"],
)
BAD_EVENTS_PRODUCED = Counter(
    "streamlearn_simulator_bad_events_produced_total",
    "Deliberately malformed events published and acknowledged, by kind.",
    ["kind"],
)
EVENTS_FAILED = Counter(
    "streamlearn_simulator_events_failed_total",
    "Events (good or malformed) the broker did not acknowledge.",
)
ENGAGEMENTS_DROPPED = Counter(
    "streamlearn_simulator_engagements_dropped_total",
    "Scheduled engagements not published because the run stopped before they were due.",
)
PENDING_ENGAGEMENTS = Gauge(
    "streamlearn_simulator_pending_engagements",
    "Engagements scheduled and not yet published.",
)
CTR = Gauge(
    "streamlearn_simulator_ctr",
    "CTR per shown item over served requests since start, by surface: model (sampled "
    "clicks; on feed any click, on ads an ad click), model_expected, random and oracle "
    "(expected click rates, from the hidden truth).",
    ["surface", "policy"],
)
CTR_RECENT = Gauge(
    "streamlearn_simulator_ctr_recent",
    "As streamlearn_simulator_ctr, over the most recent served requests only.",
    ["surface", "policy"],
)
PREDICT_LATENCY = Histogram(
    "streamlearn_simulator_predict_latency_seconds",
    "Round trip of served predict calls as the simulator sees them, by surface.",
    ["surface"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PREDICT_P50 = Gauge(
    "streamlearn_simulator_predict_latency_p50_seconds",
    "Exact median predict round trip over the latency window (every surface).",
)
PREDICT_P99 = Gauge(
    "streamlearn_simulator_predict_latency_p99_seconds",
    "Exact 99th percentile predict round trip over the latency window (every surface).",
)
