"""What new model versions cost the requests served meanwhile, over HTTP.

The online trainer of each model publishes a serving-only version every second, and
``streamlearn serve`` follows: the announcement on ``model-updates`` (and its registry
poll) makes it read the version, build and warm an onnxruntime session aside and swap it
in, and count the freshness of what it now serves. This runs ``streamlearn serve`` on an
aged registry (``bench/aged_registry.py``: both models, retention, evaluation history),
with the features of every user and item on the broker, and a paced load client
(``bench/load_client.py``, feed and ads requests of 20 candidates in turn) in phases of
``--seconds``, interleaved over ``--rounds``:

* **no versions** (the baseline);
* **versions every ``--every`` s** for both models: this process publishes them as the
  trainer does (the newest version's graph, metadata with a fresh freshness sample,
  retention to 30 versions) and announces them on ``model-updates``.

Reported per phase: p50 / p99 / p99.9 of the client's latency, p99 against the baseline's,
the swaps serving made (``streamlearn_model_swaps_total``), and the event loop's lag p99
(``streamlearn_event_loop_lag_seconds``, from its buckets).

Usage: ``python bench/bench_swaps.py [--seconds 15] [--rounds 2] [--rate 300] [--every 1]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from aged_registry import N_ITEMS, N_USERS, build, traffic
from bench_serving import Server, features_topic, free_port, lag_quantile, metric_samples
from load_client import Load, wire

from streamlearn.models.registry import FileRegistry
from streamlearn.models.snapshot import Snapshot
from streamlearn.streams.contracts import ModelUpdate, encode
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

MODELS = ["feed", "ads"]


class Publisher:
    """Publishes a serving-only version of every model each ``every`` s while on."""

    def __init__(self, registry: FileRegistry, kafka: KafkaConfig, every: float) -> None:
        self.registry = registry
        self.every = every
        self.topic = Topics(kafka.topic_prefix).model_updates
        self.producer = make_producer(kafka)
        self.on = threading.Event()
        self.stop = threading.Event()
        self.published = 0
        self.rng = np.random.default_rng(5)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _publish(self, model: str) -> None:
        newest = self.registry.latest(model)
        assert newest is not None
        meta = {
            k: v
            for k, v in newest.metadata.items()
            if k not in ("model", "version", "created_at", "state_sha256", "state_format")
        }
        now = time.time()
        n = int(self.rng.integers(5, 60))  # positives learned in the last second
        meta["serving_only"] = True
        meta["freshness"] = {
            "positives": n,
            "sample": [[now - 1.4, now - 0.9, now - 0.3] for _ in range(n)],
        }
        snap = Snapshot(self.registry.read_onnx(newest), b"", meta)
        mv = self.registry.publish(model, snap)
        self.registry.prune(model, keep=30)
        update = ModelUpdate(model, mv.version, float(mv.metadata["created_at"]))
        produce(self.producer, self.topic, encode(update), model)
        self.producer.poll(0)
        self.published += 1

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            if self.on.is_set():
                for model in MODELS:
                    self._publish(model)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        flush(self.producer)


def _swaps(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if "model_swaps_total" in k and "swapped" in k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="phase length")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between versions")
    ap.add_argument("--aged-seconds", type=int, default=300, help="simulated run of the registry")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-swaps-"))
    print(f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    build(tmp / "data" / "registry", args.aged_seconds)
    requests = [wire(f"/v1/models/{m}:predict", encode(r)) for m, r in traffic(4000, MODELS)]
    phases = {"no versions (baseline)": False, f"versions every {args.every:g} s": True}
    results: dict[str, list[tuple[list[float], float, float]]] = {p: [] for p in phases}
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, topic_prefix="bench.", partitions=4)
        features_topic(kafka, time.time())
        port = free_port()
        serve = Server(
            "serve",
            port,
            subprocess.Popen(
                [sys.executable, "-m", "streamlearn", "--log-level", "WARNING", "serve",
                 "--port", str(port), "--data-dir", str(tmp / "data"),
                 "--bootstrap-servers", broker.bootstrap_servers, "--topic-prefix", "bench."]
            ),
        )  # fmt: skip
        publisher = Publisher(FileRegistry(tmp / "data" / "registry"), kafka, args.every)
        publisher.thread.start()
        try:
            serve.wait_ready(entities=N_USERS + N_ITEMS)
            for rnd in range(args.rounds):
                for name, on in phases.items():
                    if on:
                        publisher.on.set()
                    before = metric_samples(port)
                    load = Load(port, requests, args.connections, args.rate, args.seconds)
                    lat, _elapsed, errors, _total = load.start().result()
                    after = metric_samples(port)
                    publisher.on.clear()
                    swaps = _swaps(after) - _swaps(before)
                    results[name].append((lat, swaps, lag_quantile(before, after, 0.99)))
                    a = np.asarray(lat) * 1e3
                    print(
                        f"round {rnd + 1} {name}: p50 {np.percentile(a, 50):.2f} ms p99 "
                        f"{np.percentile(a, 99):.2f} ms, {swaps:.0f} swaps, {errors} non-200, "
                        f"load average {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                    time.sleep(1.0)  # let the last swap finish
        finally:
            publisher.close()
            serve.stop()
    shutil.rmtree(tmp, ignore_errors=True)

    base = np.percentile(np.concatenate([r[0] for r in results[next(iter(phases))]]), 99)
    print(
        f"\nswaps bench: streamlearn serve, {len(MODELS)} models, {args.rate:g} req/s of 20 "
        f"candidates over {args.connections} connections, {args.rounds} x {args.seconds:g} s "
        f"per phase; load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print("| phase | requests | p50 ms | p99 ms | p99.9 ms | p99 × | swaps | loop lag p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, parts in results.items():
        lat = np.concatenate([r[0] for r in parts]) * 1e3
        p = np.percentile(lat, [50, 99, 99.9])
        lag = max(r[2] for r in parts) * 1e3
        print(
            f"| {name} | {lat.size} | {p[0]:.2f} | {p[1]:.2f} | {p[2]:.2f} "
            f"| {p[1] / (base * 1e3):.2f} | {sum(r[1] for r in parts):.0f} | ≤ {lag:g} |"
        )


if __name__ == "__main__":
    main()
