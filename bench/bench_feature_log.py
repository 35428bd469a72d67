"""What bounding the feature log costs a request: ``KafkaSink.log_prediction`` (a window of
records in flight, counted from the feature log's own producer, both records encoded and
queued in librdkafka in the caller's thread) against the same two records produced
the way serving did before (fire and forget: ``produce`` with error-only reports).

Both arms produce the same feature-log record (20 scored items with the feed model's raw
features, ~4 KB) and reply to an embedded broker at ``--rate`` requests per second (2,000:
more than one serving process answers on 2 cores), in interleaved rounds, from one thread,
with a thread serving the producers (as serving does). Reported per arm: the time a
request spends in the call (p50, p99) and the process CPU per request until every record
is acknowledged (callbacks and sleeps included, so it is the CPU the process spent on
these requests), with the ratios against the baseline of the same run, and the most
records the window held.

Usage: ``python bench/bench_feature_log.py [--requests 20000] [--rounds 3] [--rate 2000]``
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlearn.serving.sink import KafkaSink  # noqa: E402
from streamlearn.streams.contracts import (  # noqa: E402
    FeatureLogRecord,
    PredictionReply,
    ServedItem,
    encode,
)
from streamlearn.streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streamlearn.streams.kafka.clients import flush, make_producer  # noqa: E402
from streamlearn.streams.kafka.config import KafkaConfig  # noqa: E402
from streamlearn.streams.kafka.topics import Topics, ensure_topics  # noqa: E402


def _record(i: int) -> tuple[PredictionReply, FeatureLogRecord]:
    items = [
        ServedItem(
            f"i{j}",
            {
                "user_id": f"u{i % 500}",
                "item_id": f"i{j}",
                "surface": "feed",
                "item_category": f"c{j % 7}",
                "user_impressions": 120 + j,
                "user_engagements": 9,
                "user_ctr": 0.071,
                "user_hides": 1,
                "item_impressions": 3000 + j,
                "item_engagements": 210,
                "item_ctr": 0.069,
                "item_recency_s": 1.5,
                "user_recency_s": 12.0,
            },
            0.05 + j / 1000,
        )
        for j in range(20)
    ]
    rid = f"r{i}"
    record = FeatureLogRecord(rid, f"u{i % 500}", "feed", time.time(), "feed", 7, items)
    return PredictionReply(rid, "feed", 7, [it.score for it in items]), _Logged(record)


class _Logged:
    """A feature-log record as serving hands it to its sink: encoded when produced."""

    def __init__(self, record: FeatureLogRecord) -> None:
        self.record = record
        self.user_id = record.user_id

    def encode(self) -> bytes:
        return encode(self.record)


class Baseline:
    """The two records produced as serving did before: no window, error-only reports."""

    def __init__(self, kafka: KafkaConfig, topics: Topics) -> None:
        self.producer = make_producer(kafka)
        self._topics = topics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def log_prediction(self, reply: PredictionReply, record: _Logged) -> None:
        self.producer.produce(self._topics.feature_log, record.encode(), record.user_id)
        self.producer.produce(self._topics.predictions, encode(reply), record.user_id)

    def flush(self, timeout_s: float) -> None:
        flush(self.producer, timeout_s)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        flush(self.producer, 30)


def _round(sink: Any, n: int, offset: int, rate: float) -> tuple[np.ndarray, float, int]:
    records = [_record(offset + i) for i in range(n)]
    took = np.empty(n)
    peak = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    for i, (reply, record) in enumerate(records):
        if i % 20 == 0:  # bursts of 20 requests, sleeping in between (no busy wait)
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        t0 = time.perf_counter()
        sink.log_prediction(reply, record)
        took[i] = time.perf_counter() - t0
        if i % 100 == 0:
            peak = max(peak, getattr(sink, "in_flight", 0))
    sink.flush(60)  # every record queued and acknowledged
    cpu = (time.process_time() - cpu0) / n
    return took, cpu, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000.0, help="requests per second")
    args = ap.parse_args()
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, "bench.", 4)
        topics = Topics("bench.")
        ensure_topics(kafka, [topics.feature_log, topics.predictions, topics.model_updates])
        arms: dict[str, Any] = {
            "before (no window)": Baseline(kafka, topics),
            "KafkaSink (window 1000)": KafkaSink(kafka, topics),
        }
        _round(arms["before (no window)"], 2000, 0, args.rate)  # warm up both connections
        _round(arms["KafkaSink (window 1000)"], 2000, 0, args.rate)
        got: dict[str, list[tuple[np.ndarray, float, int]]] = {a: [] for a in arms}
        for r in range(args.rounds):
            for name, sink in arms.items():
                got[name].append(_round(sink, args.requests, (r + 1) * args.requests, args.rate))
        for sink in arms.values():
            sink.close()
    base = None
    for name, rounds in got.items():
        took = np.concatenate([t for t, _, _ in rounds]) * 1e6
        cpu = float(np.median([c for _, c, _ in rounds])) * 1e6
        p50, p99 = float(np.percentile(took, 50)), float(np.percentile(took, 99))
        peak = max(p for _, _, p in rounds)
        if base is None:
            base = (p50, p99, cpu)
        print(
            f"{name:26s} call p50 {p50:6.1f} µs ({p50 / base[0]:.2f}x)  p99 {p99:6.1f} µs "
            f"({p99 / base[1]:.2f}x)  CPU/request {cpu:6.1f} µs ({cpu / base[2]:.2f}x)"
            + (f"  most in flight {peak}" if "window" in name and "no" not in name else "")
        )


if __name__ == "__main__":
    main()
