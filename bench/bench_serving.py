"""``streamlearn serve`` against the thin-handler floor, on an aged registry.

Builds a registry in the state a long run leaves (``bench/aged_registry.py``: both
models, a version a second, retention, evaluation history), starts the embedded broker
with the features of every user and item on its ``features`` topic, then runs as
processes of their own:

* ``thin`` — the baseline (``bench/thin_handler.py``): a bare uvicorn ASGI handler that
  parses the same request, runs the same ONNX session on the same featurised rows and
  returns JSON;
* ``thin+kafka`` — the same handler, also producing per request the two records serving
  produces (a feature-log record of serving's size, and the reply): what Kafka alone adds;
* ``serve`` — ``streamlearn serve`` exactly as a user runs it (feature replica, both
  models, Kafka feature log and predictions, metrics, registry polling).

A load client (``bench/load_client.py``, its own process on the same 2 cores) sends
requests of 20 candidates, feed and ads in turn, over 64 keep-alive connections; per
server and round (servers interleaved, so noise on a shared machine falls on both):

* **paced** at ``--rate`` requests/s: p50, p99, and the server's CPU per request
  (``/proc/<pid>/task/*/stat``: every thread of the server process, over every request
  sent), with the share of its busiest thread (the one answering requests) and of
  librdkafka's threads;
* **saturation**: every connection back to back; replies/s.

Also, in this process: raw ``InferenceSession.run`` against ``PredictionService.predict``
(feature replica reads, featurisation, both runs' bookkeeping) on the same 20-candidate
requests, each request's raw run timed just before its prediction. ``--profile S``
samples ``streamlearn serve`` with py-spy (``pip install py-spy``; ``--gil``: the thread
holding the GIL) for S seconds at ``--profile-rate`` and prints the top frames.

Usage: ``python bench/bench_serving.py [--rate 1000] [--seconds 10] [--sat-seconds 5]
[--rounds 2] [--profile 10]``
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aged_registry import N_ITEMS, N_USERS, build, entities, traffic
from load_client import Load, wire

from streamlearn.models.registry import FileRegistry
from streamlearn.project import load_project
from streamlearn.serving.replica import FeatureReplica
from streamlearn.serving.service import PredictionService
from streamlearn.streams.contracts import FeatureRecord, encode
from streamlearn.streams.features.store import served_features
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

BENCH = Path(__file__).resolve().parent
MODELS = ["feed", "ads"]
#: The built-in example project, whose models are served.
CATALOG = load_project().catalog
N_REQUESTS = 4000
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_by_thread(pid: int) -> dict[str, float]:
    """User + system CPU seconds of each thread of ``pid``, by ``name/thread id``
    (librdkafka's threads are named ``rdk:...``; Python's keep the process's name)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


@dataclass
class Cpu:
    """A server's CPU µs per request over a phase: all of it, its busiest thread's (the
    one answering requests), and its librdkafka threads' (the Kafka clients' own work)."""

    total: float
    busiest: float
    kafka: float


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> Cpu:
    """The CPU per request of ``requests`` between two :func:`cpu_by_thread` readings."""
    used = {k: v - before.get(k, 0.0) for k, v in after.items()}
    us = 1e6 / max(requests, 1)
    return Cpu(
        sum(used.values()) * us,
        max(used.values(), default=0.0) * us,
        sum(v for k, v in used.items() if k.startswith("rdk:")) * us,
    )


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def metric_samples(port: int) -> dict[str, float]:
    """The Prometheus samples of the server on ``port``, by name with labels."""
    out = {}
    for line in _get(f"http://127.0.0.1:{port}/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class Server:
    """A server process under test."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    paced: list[tuple[list[float], float, Cpu, int]] = field(default_factory=list)
    saturated: list[float] = field(default_factory=list)

    def wait_ready(self, timeout_s: float = 120.0, entities: int = 0) -> None:
        """Wait until it accepts connections (``serve``: serves both models and its
        replica holds ``entities``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}")
            try:
                if self.name.startswith("thin"):
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                if b"null" not in _get(f"http://127.0.0.1:{self.port}/healthz"):
                    done = metric_samples(self.port).get(
                        "streamlearn_feature_replica_records_total", 0.0
                    )
                    if done >= entities:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready within {timeout_s:.0f} s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def lag_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float:
    """The ``q`` quantile of the event loop's lag observed between two scrapes of
    ``streamlearn_event_loop_lag_seconds`` (the bound of its bucket; NaN without it)."""
    key = "streamlearn_event_loop_lag_seconds_bucket"
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(key)
    )
    total = buckets[-1][1] if buckets else 0.0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return float("nan")


def _phase(server: Server, requests: list[bytes], conns: int, rate: float, seconds: float):
    """Latencies, measured seconds, server CPU per request, non-200s, loop lag p99."""
    metrics = server.name == "serve"
    before = metric_samples(server.port) if metrics else {}
    load = Load(server.port, requests, conns, rate, seconds).start()
    cpu0 = cpu_by_thread(server.proc.pid)
    lat, elapsed, errors, total = load.result()
    cpu = cpu_per_request(cpu0, cpu_by_thread(server.proc.pid), total)
    lag = lag_quantile(before, metric_samples(server.port), 0.99) if metrics else float("nan")
    return lat, elapsed, cpu, errors, lag


def features_topic(kafka: KafkaConfig, now: float) -> None:
    """The features of every user and item of the aged world on the ``features`` topic."""
    topics = Topics(kafka.topic_prefix)
    ensure_topics(kafka, [topics.features])
    producer = make_producer(kafka)
    users, items = entities(now)
    for entity, table in (("user", users), ("item", items)):
        for key, values in table.items():
            rec = FeatureRecord(entity=entity, id=key, values=values, ts=now)  # type: ignore[arg-type]
            produce(producer, topics.features, encode(rec), f"{entity}/{key}")
    flush(producer)


def _floor(registry: FileRegistry, kafka: KafkaConfig, state: Path) -> list[float]:
    """p50 of raw ``session.run`` and of ``service.predict`` (ms), same requests: back to
    back, then with the CPU's caches flushed before each call (16 MB written), as a
    server sees them between requests on a busy machine."""
    replica = FeatureReplica(kafka, state, CATALOG).start()
    try:
        deadline = time.monotonic() + 60
        while replica.records_applied < N_USERS + N_ITEMS and time.monotonic() < deadline:
            time.sleep(0.05)
        service = PredictionService(registry, replica, MODELS, CATALOG)
        for model in MODELS:
            mv = registry.serving_version(model)
            assert mv is not None
            service.load(mv)
        reqs = traffic(2000, MODELS)
        now = time.time()
        featurised = []
        for model, r in reqs:
            sess = service.session(model)
            user = replica.user(r.user_id)
            row = served_features(CATALOG).row
            rows = [row(r, c, user, replica.item(c), now) for c in r.candidates]
            featurised.append((sess, *sess.featuriser.transform_many(rows)))
        junk = np.zeros(4 << 20, np.float32)
        out = []
        for cold in (False, True):
            raw, svc = [], []
            for _ in range(1 if cold else 3):
                # each request's raw run beside its predict: both see the machine as it is
                for (sess, idx, val), (model, r) in zip(featurised, reqs, strict=True):
                    if cold:
                        junk += 1
                    t0 = time.perf_counter()
                    sess._ort.run(["prob"], {"idx": idx, "val": val})
                    raw.append(time.perf_counter() - t0)
                    if cold:
                        junk += 1
                    t0 = time.perf_counter()
                    service.predict(model, r)
                    svc.append(time.perf_counter() - t0)
            out += [float(np.median(raw)) * 1e3, float(np.median(svc)) * 1e3]
        _batching(featurised)
        return out
    finally:
        replica.stop()


def _batching(featurised: list[tuple[Any, np.ndarray, np.ndarray]]) -> None:
    """What batching concurrent requests into one ``session.run`` would save (Triton's
    dynamic batching): per request, the session's cost when ``k`` requests' rows of one
    model go in one call (their arrays concatenated, the scores split back), against
    one call each."""
    by_model: dict[int, list[tuple[Any, np.ndarray, np.ndarray]]] = {}
    for f in featurised * 3:  # three passes over the requests, as above
        by_model.setdefault(id(f[0]), []).append(f)
    print("\nbatching concurrent requests into one session.run (per request, µs, p50):")
    base = None
    for k in (1, 2, 4, 8, 16):
        per: list[float] = []
        for group in by_model.values():
            for at in range(0, len(group) - k + 1, k):
                chunk = group[at : at + k]
                sess = chunk[0][0]
                t0 = time.perf_counter()
                if k == 1:  # one call each: the session alone, as served today
                    sess._ort.run(["prob"], {"idx": chunk[0][1], "val": chunk[0][2]})
                else:
                    idx = np.concatenate([c[1] for c in chunk])
                    val = np.concatenate([c[2] for c in chunk])
                    (prob,) = sess._ort.run(["prob"], {"idx": idx, "val": val})
                    np.split(prob, np.cumsum([len(c[1]) for c in chunk])[:-1])
                per.append((time.perf_counter() - t0) / k)
        p50 = float(np.median(per)) * 1e6
        base = base or p50
        print(f"  {k:2d} requests a call: {p50:6.1f} µs a request ({p50 / base:.2f}x one each)")


def _profile(server: Server, requests: list[bytes], rate: float, seconds: float, out: Path) -> None:
    """Sample ``server`` with py-spy under paced load (the thread holding the GIL: where
    its Python time goes); print its top frames."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not found (pip install py-spy): no profile")
        return
    load = Load(server.port, requests, 16, rate, seconds + 2).start()
    time.sleep(1.0)
    subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--threads",
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
    )
    load.result()
    print(f"py-spy, {seconds:g} s at {rate:g} req/s over 16 connections (raw: {out})")
    print(top_frames(out.read_text().splitlines()))


def top_frames(lines: list[str], n: int = 15) -> str:
    """The threads, and the ``n`` functions with the most samples on the stack
    (inclusive) and on top (self), from py-spy's raw (collapsed) output."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        threads[stack.split(";")[0].partition(": ")[2]] += k
        frames = []
        for f in stack.split(";")[1:]:  # the first is the thread
            name, _, where = f.partition(" (")
            frames.append(f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})")
        total += k
        for f in set(frames):
            inclusive[f] += k
        if frames:
            own[frames[-1]] += k
    out = [f"{total} samples; threads:"]
    out += [f"  {100 * c / total:5.1f}%  {t}" for t, c in threads.most_common()]
    out.append("inclusive (on the stack):")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    out.append("self (on top of the stack):")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(n)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="paced phase: requests/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="paced phase length per round")
    ap.add_argument("--sat-seconds", type=float, default=5.0, help="saturation phase length")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (servers interleaved)")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    ap.add_argument("--aged-seconds", type=int, default=300, help="simulated run of the registry")
    ap.add_argument("--profile", type=float, default=0.0, help="py-spy seconds (0: none)")
    ap.add_argument("--profile-rate", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    print(f"load average {os.getloadavg()[0]:.1f} at start; directory {tmp}", flush=True)
    t0 = time.perf_counter()
    registry = build(tmp / "data" / "registry", args.aged_seconds)
    print(f"aged registry built in {time.perf_counter() - t0:.0f} s", flush=True)
    requests = [wire(f"/v1/models/{m}:predict", encode(r)) for m, r in traffic(N_REQUESTS, MODELS)]
    now = time.time()
    servers: list[Server] = []
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, topic_prefix="bench.", partitions=4)
        features_topic(kafka, now)
        try:
            topics = Topics(kafka.topic_prefix)
            ensure_topics(kafka, [topics.feature_log, topics.predictions])
            for name, extra in (
                ("thin", []),
                ("thin+kafka", ["--bootstrap-servers", broker.bootstrap_servers]),
            ):
                port = free_port()
                thin = subprocess.Popen(
                    [
                        sys.executable,
                        str(BENCH / "thin_handler.py"),
                        "--port",
                        str(port),
                        "--registry",
                        str(registry.root),
                        "--requests",
                        str(N_REQUESTS),
                        "--now",
                        repr(now),
                        "--topic-prefix",
                        "bench.",
                        *extra,
                    ]
                )
                servers.append(Server(name, port, thin))
            port = free_port()
            serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlearn",
                    "--log-level",
                    "WARNING",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(tmp / "data"),
                    "--bootstrap-servers",
                    broker.bootstrap_servers,
                    "--topic-prefix",
                    "bench.",
                ]
            )
            servers.append(Server("serve", port, serve))
            for s in servers:
                s.wait_ready(entities=N_USERS + N_ITEMS)
            for rnd in range(args.rounds):
                for s in servers:
                    lat, elapsed, cpu, errors, lag = _phase(
                        s, requests, args.connections, args.rate, args.seconds
                    )
                    s.paced.append((lat, elapsed, cpu, errors))
                    sat, sat_elapsed, _, sat_errors, _ = _phase(
                        s, requests, args.connections, 0, args.sat_seconds
                    )
                    s.saturated.append(len(sat) / sat_elapsed)
                    a = np.asarray(lat) * 1e3
                    print(
                        f"round {rnd + 1} {s.name:10s} p50 {np.percentile(a, 50):.2f} ms "
                        f"p99 {np.percentile(a, 99):.2f} ms CPU {cpu.total:.0f} µs/req "
                        f"{'' if lag != lag else f'loop lag p99 <= {lag * 1e3:g} ms '}"
                        f"({errors} non-200); saturation {len(sat) / sat_elapsed:,.0f} req/s "
                        f"({sat_errors} non-200); load average {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            if args.profile:
                _profile(servers[-1], requests, args.profile_rate, args.profile, tmp / "py-spy.txt")
        finally:
            for s in servers:
                s.stop()
        raw_ms, svc_ms, raw_cold, svc_cold = _floor(registry, kafka, tmp / "floor")

    def med(xs: list[float]) -> float:
        return float(np.median(xs))

    print(
        f"\nserving bench: {len(MODELS)} models, 20 candidates, {args.connections} "
        f"connections, paced at {args.rate:g} req/s for {args.seconds:g} s and saturated for "
        f"{args.sat_seconds:g} s, {args.rounds} round(s), medians over rounds; load client on "
        f"the same machine; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "\n| server | p50 ms | p99 ms | CPU µs/req | of which its busiest thread | "
        "librdkafka's threads | saturation req/s | CPU × thin |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base_cpu = med([p[2].total for p in servers[0].paced])
    for s in servers:
        p50 = med([float(np.percentile(p[0], 50)) * 1e3 for p in s.paced])
        p99 = med([float(np.percentile(p[0], 99)) * 1e3 for p in s.paced])
        cpu = med([p[2].total for p in s.paced])
        busiest = med([p[2].busiest for p in s.paced])
        rdk = med([p[2].kafka for p in s.paced])
        print(
            f"| {s.name} | {p50:.2f} | {p99:.2f} | {cpu:.0f} | {busiest:.0f} | {rdk:.0f} "
            f"| {med(s.saturated):,.0f} | {cpu / base_cpu:.2f} |"
        )
    print(
        f"\nin process: session.run p50 {raw_ms * 1e3:.1f} µs, service.predict p50 "
        f"{svc_ms * 1e3:.1f} µs ({svc_ms / raw_ms:.1f}×); with the caches flushed before each "
        f"call: {raw_cold * 1e3:.1f} and {svc_cold * 1e3:.1f} µs ({svc_cold / raw_cold:.1f}×)"
    )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
