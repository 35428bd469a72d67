"""What running flow work on Ray costs on this machine, against the process pool it
replaced.

Measured in one run: starting a local Ray (``streamlearn.offline.flow.compute.connect``: GCS,
raylet, object store, no dashboard), its first task, then a task's round trip once warm,
and stopping it; against the baseline of the sweep's former executor, a ``spawn``
``ProcessPoolExecutor`` (start, first call, a warm call, shutdown). The work is a no-op,
so the figures are pure overhead.

    python bench/bench_flow_ray.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor


def noop(x: int) -> int:
    return x + 1


def _pool_round() -> dict[str, float]:
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    t1 = time.perf_counter()
    pool.submit(noop, 1).result()
    t2 = time.perf_counter()
    warm = []
    for i in range(20):
        s = time.perf_counter()
        pool.submit(noop, i).result()
        warm.append(time.perf_counter() - s)
    t3 = time.perf_counter()
    pool.shutdown()
    t4 = time.perf_counter()
    return {
        "start": t1 - t0,
        "first task": t2 - t1,
        "warm task": statistics.median(warm),
        "stop": t4 - t3,
    }


def _ray_round() -> dict[str, float]:
    import ray

    from streamlearn.offline.flow.compute import RayConfig, connect, shutdown

    t0 = time.perf_counter()
    connect(RayConfig(num_cpus=2))
    t1 = time.perf_counter()
    task = ray.remote(num_cpus=1)(noop)
    ray.get(task.remote(1))
    t2 = time.perf_counter()
    warm = []
    for i in range(20):
        s = time.perf_counter()
        ray.get(task.remote(i))
        warm.append(time.perf_counter() - s)
    t3 = time.perf_counter()
    shutdown()
    t4 = time.perf_counter()
    return {
        "start": t1 - t0,
        "first task": t2 - t1,
        "warm task": statistics.median(warm),
        "stop": t4 - t3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray  # imported once, outside the timings (~0.3 s)

    print(f"ray {ray.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    pool, local = [], []
    for _ in range(args.rounds):
        pool.append(_pool_round())
        local.append(_ray_round())
    print(f"{'phase':12s} {'spawn pool s':>13s} {'local Ray s':>12s} {'Ray / pool':>11s}")
    for key in ("start", "first task", "warm task", "stop"):
        p = statistics.median(r[key] for r in pool)
        r = statistics.median(x[key] for x in local)
        print(f"{key:12s} {p:13.4f} {r:12.4f} {r / p:11.1f}")
    total_p = statistics.median(sum(r.values()) for r in pool)
    total_r = statistics.median(sum(x.values()) for x in local)
    print(f"{'total':12s} {total_p:13.4f} {total_r:12.4f} {total_r / total_p:11.1f}")


if __name__ == "__main__":
    main()
