"""Prometheus metrics of the stream processors (prefix ``streamlearn_``, base units)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter(
    "streamlearn_events_in_total",
    "Records consumed and processed (or dead-lettered), per processor and topic.",
    ["processor", "topic"],
)
EVENTS_PROCESSED = Counter(
    "streamlearn_events_processed_total",
    "Valid records applied by a processor (dead-lettered ones excluded).",
    ["processor", "topic"],
)
EVENTS_OUT = Counter(
    "streamlearn_events_out_total",
    "Records produced, per processor and topic.",
    ["processor", "topic"],
)
INVALID_SKIPPED = Counter(
    "streamlearn_invalid_skipped_total",
    "Undecodable records skipped because another processor of the topic dead-letters them.",
    ["processor", "topic"],
)
BATCH_SECONDS = Histogram(
    "streamlearn_batch_seconds",
    "Time to process one micro-batch end to end (apply, produce, state write, commit).",
    ["processor"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG = Gauge(
    "streamlearn_consumer_lag",
    "Records behind the high watermark the broker reports (wrong on the embedded broker).",
    ["processor", "topic"],
)
COMMITTED = Gauge(
    "streamlearn_committed_records",
    "Records counted in a store processor's committed state, per input (or output) topic "
    "and partition: applied, dead_lettered, skipped (another processor dead-letters them) "
    "or emitted (the joiner's examples). Read from the state, so a kill loses none of them.",
    ["processor", "topic", "partition", "outcome"],
)
