"""Prometheus metrics of the prediction service (prefix ``streamlearn_``, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Fine buckets from 0.5 ms to 100 ms: the serving budget is tens of milliseconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
)

#: From a quarter second to two minutes, fine around the few seconds that matter.
FRESHNESS_BUCKETS = (
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.25,
    2.5,
    2.75,
    3.0,
    3.5,
    4.0,
    5.0,
    6.0,
    7.0,
    8.0,
    9.0,
    10.0,
    12.0,
    14.0,
    16.0,
    18.0,
    20.0,
    25.0,
    30.0,
    45.0,
    60.0,
    120.0,
)

PREDICTIONS = Counter(
    "streamlearn_predictions_total",
    "Prediction requests answered (HTTP and request topic), per model.",
    ["model"],
)
PREDICT_LATENCY = Histogram(
    "streamlearn_predict_latency_seconds",
    "Time to answer one prediction request in the service: feature reads, "
    "featurisation and the model run.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
MODEL_VERSION = Gauge(
    "streamlearn_serving_model_version",
    "Version of the model currently serving (0: none loaded yet).",
    ["model"],
)
HTTP_REQUESTS = Counter(
    "streamlearn_http_requests_total",
    "HTTP responses sent, per status code.",
    ["code"],
)
HTTP_CONNECTIONS = Gauge(
    "streamlearn_http_connections",
    "Open HTTP connections.",
)
SHADOW_VERSION = Gauge(
    "streamlearn_serving_shadow_version",
    "Version scored as a shadow beside production (0: none).",
    ["model"],
)
SHADOW_ERRORS = Counter(
    "streamlearn_shadow_errors_total",
    "Requests whose shadow scoring failed (answered by production all the same).",
    ["model"],
)
MODEL_SWAPS = Counter(
    "streamlearn_model_swaps_total",
    "Attempts to load a model version: outcome is swapped, rejected or shadow_rejected.",
    ["model", "outcome"],
)
REPLICA_RECORDS = Counter(
    "streamlearn_feature_replica_records_total",
    "Feature records applied to the local feature replica.",
)
REPLICA_BAD_RECORDS = Counter(
    "streamlearn_feature_replica_bad_records_total",
    "Feature records the replica could not decode (logged and skipped).",
)
PUBLISH_DROPPED = Counter(
    "streamlearn_serving_publish_dropped_total",
    "Feature-log or prediction records dropped because the producer queue was full.",
    ["topic"],
)
FEATURE_LOG_IN_FLIGHT = Gauge(
    "streamlearn_feature_log_in_flight",
    "Feature-log records answered and not yet acknowledged by the broker: what a crash of "
    "serving now would lose (at most the sink's window).",
)
FEATURE_LOG_RECORDS = Counter(
    "streamlearn_feature_log_records_total",
    "Feature-log records by outcome: acknowledged, failed (refused by the broker) or "
    "dropped (the window of records in flight, or the producer queue, was full).",
    ["outcome"],
)
REQUEST_ERRORS = Counter(
    "streamlearn_request_errors_total",
    "Requests from the request topic answered with an error reply, per the HTTP status "
    "the same request gets (404: model not served, 503: no version yet, 400: malformed).",
    ["status"],
)
FEATURE_READS = Counter(
    "streamlearn_feature_reads_total",
    "Entities read over the feature API: outcome found or missing.",
    ["outcome"],
)
FRESHNESS = Histogram(
    "streamlearn_freshness_seconds",
    "Seconds from an engagement's event time until this server answered with a model "
    "version that learned it (per sampled positive; see streamlearn.models.freshness).",
    ["model"],
    buckets=FRESHNESS_BUCKETS,
)
FRESHNESS_STAGE = Histogram(
    "streamlearn_freshness_stage_seconds",
    "Freshness broken down: join_wait (engagement to the joiner producing the example), "
    "trainer_lag (to learned), publish (to the version's publish), swap (to served here).",
    ["model", "stage"],
    buckets=FRESHNESS_BUCKETS,
)
#: From a millisecond (the event loop's timer resolution) to a second.
LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
EVENT_LOOP_LAG = Histogram(
    "streamlearn_event_loop_lag_seconds",
    "How late the HTTP event loop ran a timer due every 25 ms: how long something kept it "
    "from serving requests (a slow handler, or another thread holding the GIL). Its "
    "timers are in milliseconds, so values under 1 ms are timer rounding.",
    buckets=LAG_BUCKETS,
)
