"""Where ``streamlearn serve`` spends a request's CPU, measured inside the running server.

The same world as ``bench/bench_serving.py`` (an aged registry, the broker with every
user's and item's features, 20 candidates a request over 64 keep-alive connections, the
load client on the same cores), one ``streamlearn serve`` process whose steps are timed
with their thread's CPU clock (``time.thread_time_ns``) around each call:

* ``PredictionService.predict`` (the replica's reads, featurising, ``session.run``, the
  feature-log record), ``CandidateFeaturiser.featurise`` within it, and
  ``KafkaSink.log_prediction`` (encoding the feature-log record, queueing both records);
* ``featurise`` once more, right after, on the same arguments (its result dropped): what
  the same work costs with the caches it has just warmed. The gap between the two is
  what cold caches cost featurising in a running server, where between two requests the
  load client, the broker and the server's other work pass through the CPU's caches.

The process's CPU per request counts the repeated call too; the other steps do not
(``predict``'s figure leaves it out).

Usage: ``python bench/bench_serving_stages.py [--rate 1000] [--seconds 20]``
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aged_registry import N_ITEMS, N_USERS, build, traffic
from bench_serving import (
    MODELS,
    N_REQUESTS,
    Server,
    cpu_by_thread,
    cpu_per_request,
    features_topic,
    free_port,
)
from load_client import Load, wire

from streamlearn.streams.contracts import encode
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

#: The environment variable naming the file the timed server writes its figures to.
_OUT = "STREAMLEARN_BENCH_STAGES"


def _timed_serve(out: str, argv: list[str]) -> None:
    """Run the command line with the steps timed; write the figures to ``out`` at exit."""
    from streamlearn.cli import main
    from streamlearn.serving.candidates import CandidateFeaturiser
    from streamlearn.serving.service import PredictionService
    from streamlearn.serving.sink import KafkaSink

    spent: dict[str, list[int]] = {}  # step -> [calls, thread CPU ns]
    aside = [0]  # thread CPU ns of the repeated calls, not counted in the steps around them

    def timed(name: str, step: Callable[..., Any], again: str = "") -> Callable[..., Any]:
        spent[name] = [0, 0]
        if again:
            spent[again] = [0, 0]

        def call(*args: Any, **kwargs: Any) -> Any:
            t0, a0 = time.thread_time_ns(), aside[0]
            try:
                return step(*args, **kwargs)
            finally:
                t1 = time.thread_time_ns()
                spent[name][0] += 1
                spent[name][1] += t1 - t0 - (aside[0] - a0)
                if again:
                    step(*args, **kwargs)
                    took = time.thread_time_ns() - t1
                    spent[again][0] += 1
                    spent[again][1] += took
                    aside[0] += took

        return call

    PredictionService.predict = timed("predict", PredictionService.predict)  # type: ignore[method-assign]
    CandidateFeaturiser.featurise = timed(  # type: ignore[method-assign]
        "featurise", CandidateFeaturiser.featurise, again="featurise again, right after"
    )
    KafkaSink.log_prediction = timed("log_prediction", KafkaSink.log_prediction)  # type: ignore[method-assign]

    def write() -> None:
        Path(out).write_text(json.dumps({k: v[1] / 1e3 / max(v[0], 1) for k, v in spent.items()}))

    atexit.register(write)
    sys.argv = ["streamlearn", *argv]
    main()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured phase's length")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    build(tmp / "data" / "registry", 300)
    requests = [wire(f"/v1/models/{m}:predict", encode(r)) for m, r in traffic(N_REQUESTS, MODELS)]
    out = tmp / "stages.json"
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, topic_prefix="bench.", partitions=4)
        features_topic(kafka, time.time())
        topics = Topics(kafka.topic_prefix)
        ensure_topics(kafka, [topics.feature_log, topics.predictions])
        port = free_port()
        argv = [
            "--log-level", "WARNING", "serve", "--port", str(port),
            "--data-dir", str(tmp / "data"),
            "--bootstrap-servers", broker.bootstrap_servers, "--topic-prefix", "bench.",
        ]  # fmt: skip
        env = dict(os.environ, **{_OUT: str(out)})
        proc = subprocess.Popen([sys.executable, __file__, "--serve", *argv], env=env)
        server = Server("serve", port, proc)
        try:
            server.wait_ready(entities=N_USERS + N_ITEMS)
            Load(port, requests, args.connections, args.rate, 2.0).start().result()  # warm up
            cpu0 = cpu_by_thread(proc.pid)
            _, _, errors, total = (
                Load(port, requests, args.connections, args.rate, args.seconds).start().result()
            )
            cpu = cpu_per_request(cpu0, cpu_by_thread(proc.pid), total)
        finally:
            server.stop()
        steps = json.loads(out.read_text())
    print(
        f"\n`streamlearn serve`, {total:,} requests at {args.rate:g} req/s ({errors} non-200): "
        f"{cpu.total:.0f} µs of CPU a request, {cpu.busiest:.0f} in its busiest thread, "
        f"{cpu.kafka:.0f} in librdkafka's (the repeated featurising included)\n"
    )
    print("| step (thread CPU a call) | µs |")
    print("|---|---:|")
    for name, us in steps.items():
        print(f"| {name} | {us:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _timed_serve(os.environ[_OUT], sys.argv[2:])
    else:
        main()
