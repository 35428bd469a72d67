"""``up --metrics-file``: scrapes of several processes over time, written as one
OpenMetrics file whose queries see the labels Prometheus would add."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.stack.metrics_file import MetricsFile


def _scrape(registry: CollectorRegistry) -> list[Metric]:
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def test_rounds_of_two_processes_in_one_file(tmp_path: Path) -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    events = Counter("streamlearn_events_in_total", "in", ["topic"], registry=a)
    latency = Histogram("streamlearn_predict_latency_seconds", "lat", registry=b, buckets=(0.1,))
    out = MetricsFile(tmp_path / "m.om", interval_s=5.0)
    for t, n in ((100.0, 3), (105.0, 5)):
        assert out.due(t)
        events.labels("activity").inc(n)
        latency.observe(0.05)
        out.record(t, {"features": (9100, _scrape(a)), "serving": (8080, _scrape(b))})
        assert not out.due(t + 1)
    out.write()

    text = (tmp_path / "m.om").read_text()
    assert text.endswith("# EOF\n") and "_created" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("streamlearn_events_in_total")]
    assert lines == [
        'streamlearn_events_in_total{instance="127.0.0.1:9100",job="features",topic="activity"}'
        " 3.0 100.0",
        'streamlearn_events_in_total{instance="127.0.0.1:9100",job="features",topic="activity"}'
        " 8.0 105.0",
    ]
    # a histogram's buckets, count and sum of one scrape stay together, scrapes in order
    hist = [ln.split("{")[0] for ln in text.splitlines() if ln.startswith("streamlearn_predict")]
    point = [
        "streamlearn_predict_latency_seconds_bucket",
        "streamlearn_predict_latency_seconds_bucket",
        "streamlearn_predict_latency_seconds_count",
        "streamlearn_predict_latency_seconds_sum",
    ]
    assert hist == point * 2
    assert text.count("# TYPE streamlearn_predict_latency_seconds histogram") == 1
