"""What swapping model versions costs the requests served meanwhile.

The online trainer publishes a serving-only version about every second per model, and
serving loads each one aside (read the graph, build and warm an onnxruntime session) and
swaps it in by one reference assignment (``PredictionService.load``). This measures
``service.predict`` latency (20 candidates, the feed model at 2^18 coordinates, requests
1 ms apart on one thread) while another thread swaps versions every ``S`` seconds,
against no swaps in the same process (the baseline; rounds interleaved).

Usage: ``python bench/bench_swaps.py [--seconds 8] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.service import PredictionService
from streamlearn.streams.catalog.models import FEED
from streamlearn.streams.contracts import PredictionRequest


class _NoFeatures:
    def user(self, user_id: str) -> None:
        return None

    def item(self, item_id: str) -> None:
        return None


def _measure(
    service: PredictionService, versions: list, every: float | None, seconds: float
) -> tuple[np.ndarray, list[float]]:
    request = PredictionRequest("r", "u1", "feed", [f"i{i}" for i in range(20)])
    stop = threading.Event()
    loads: list[float] = []

    def swapper() -> None:
        k = 0
        while every is not None and not stop.wait(every):
            t = time.perf_counter()
            service.load(versions[k % len(versions)])
            loads.append(time.perf_counter() - t)
            k += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        service.predict("feed", request)
        latencies.append(time.perf_counter() - t)
        time.sleep(0.001)
    stop.set()
    thread.join()
    return np.array(latencies) * 1e3, loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    registry = FileRegistry(tempfile.mkdtemp(prefix="bench-swaps-"))
    learner = FEED.create()
    rng = np.random.default_rng(0)
    rows = [{"user_id": f"u{i}", "item_id": f"i{i % 50}", "surface": "feed"} for i in range(2000)]
    learner.learn_many(rows, (rng.random(2000) < 0.1).astype(float))
    versions = [registry.publish("feed", learner.snapshot(state=False)) for _ in range(4)]
    service = PredictionService(registry, _NoFeatures(), ["feed"])
    service.load(versions[0])
    results: dict[str, list[np.ndarray]] = {}
    loads: list[float] = []
    for _ in range(args.rounds):
        for every in (None, 1.0, 0.5, 0.1):
            name = "no swaps (baseline)" if every is None else f"a swap every {every:g} s"
            lat, got = _measure(service, versions, every, args.seconds)
            results.setdefault(name, []).append(lat)
            loads += got
    base = np.concatenate(results["no swaps (baseline)"])
    print(f"load + swap of a version: mean {1e3 * np.mean(loads):.1f} ms over {len(loads)}\n")
    print("| | requests | p50 ms | p99 ms | p99.9 ms | p99 × |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, parts in results.items():
        lat = np.concatenate(parts)
        p = np.percentile(lat, [50, 99, 99.9])
        ratio = p[1] / np.percentile(base, 99)
        print(f"| {name} | {lat.size} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
