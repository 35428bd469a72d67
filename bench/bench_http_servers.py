"""Serving over HTTP, old server against new, side by side (20 candidates per request).

Starts the embedded broker and a ServingApp (feature replica, Kafka feature log,
predictions topic: everything a production request pays for), then serves the same
prediction service with several HTTP servers in the same process, each on its own port:

* ``stdlib``  — the former server (``bench/stdlib_server.py``: ``ThreadingHTTPServer``,
  a thread per connection), the baseline;
* ``uvicorn`` — the ASGI app on uvicorn with httptools and uvloop, as ``streamlearn
  serve`` runs it (``serving/server.py``, limits and time-outs on);
* ``uvicorn-asyncio`` — the same on the standard asyncio loop (what uvloop buys);
* ``granian`` — the same ASGI app on granian (Rust HTTP, embedded; 1 runtime thread).

A load client in a separate process (asyncio on uvloop, raw HTTP/1.1) keeps 64 keep-alive
connections and, per server and per round (servers interleaved, so noise on a shared
machine falls on all of them):

* **paced**: ``--rate`` requests/s in total (request k of connection i is due at
  ``(k * 64 + i) / rate`` s; a connection whose last reply is late sends at once);
  latency is from writing a request to reading its whole reply;
* **saturation**: every connection sends back to back for ``--sat-seconds``; the
  throughput is replies/s, the load client sharing the machine's cores.

Also prints the in-process floor: raw ``InferenceSession.run`` and
``PredictionService.predict`` (features, featurise, run), as before.

Usage: ``python bench/bench_http_servers.py [--rate 1000] [--seconds 10] [--sat-seconds 5]
[--rounds 2] [--connections 64] [--servers stdlib,uvicorn,uvicorn-asyncio,granian]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from load_client import Load, wire  # bench/ is on sys.path when run as a script

from streamlearn.models import zoo
from streamlearn.models.registry import FileRegistry
from streamlearn.project import load_project
from streamlearn.serving.app import ServingApp, ServingConfig
from streamlearn.serving.http import ServingAPI, build_api
from streamlearn.serving.server import HttpServer
from streamlearn.streams.contracts import FeatureRecord, PredictionRequest, encode
from streamlearn.streams.features.store import served_features
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

N_USERS, N_ITEMS, N_CANDIDATES = 1000, 500, 20
#: The built-in example project, whose feed model is served.
EXAMPLE = load_project()


def _request(i: int, rng: np.random.Generator) -> dict[str, Any]:
    items = rng.choice(N_ITEMS, N_CANDIDATES, replace=False)
    return {
        "request_id": f"b{i}",
        "user_id": f"u{rng.integers(N_USERS)}",
        "surface": "feed",
        "candidates": [f"i{j}" for j in items],
        "context": {"hour": int(i % 24)},
    }


def _wire_requests(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    return [wire("/v1/models/feed:predict", orjson.dumps(_request(i, rng))) for i in range(n)]


class Phase:
    """One load phase on one server: latencies, throughput, server CPU per request."""

    def __init__(self, port: int, conns: int, rate: float, seconds: float) -> None:
        load = Load(port, _wire_requests(2000), conns, rate, seconds)
        cpu0 = time.process_time()  # this process only: the server side, not the client
        load.start()
        self.lat, self.elapsed, self.errors, total = load.result()
        self.cpu_us = (time.process_time() - cpu0) / max(total, 1) * 1e6
        self.throughput = len(self.lat) / self.elapsed


# -- the servers under test ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stdlib(app: ServingApp, api: ServingAPI) -> tuple[int, Callable[[], None]]:
    from stdlib_server import ServingHTTPServer  # bench/ is on sys.path when run as a script

    server = ServingHTTPServer(("127.0.0.1", 0), app.service, app.sink)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return server.port, stop


def _uvicorn(app: ServingApp, api: ServingAPI) -> tuple[int, Callable[[], None]]:
    return app.port, lambda: None  # the ServingApp's own server, as `streamlearn serve` runs it


def _uvicorn_asyncio(app: ServingApp, api: ServingAPI) -> tuple[int, Callable[[], None]]:
    server = HttpServer(api, "127.0.0.1", 0, app.config.http, loop="asyncio").start()
    return server.port, server.stop


def _granian(app: ServingApp, api: ServingAPI, **options: Any) -> tuple[int, Callable[[], None]]:
    import uvloop
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    port = _free_port()
    server = Server(
        api,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGINL,
        http=HTTPModes.http1,
        websockets=False,
        log_enabled=False,
        **{"runtime_threads": 1, **options},
    )
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

    def stop() -> None:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)

    return port, stop


SERVERS = {
    "stdlib": _stdlib,
    "uvicorn": _uvicorn,
    "uvicorn-asyncio": _uvicorn_asyncio,
    "granian": _granian,
    "granian-2-threads": lambda app, api: _granian(app, api, runtime_threads=2),
}


def _pcts(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    a = np.asarray(lat) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _fixture(tmp: Path, kafka: KafkaConfig) -> FileRegistry:
    spec = EXAMPLE.model_catalog.get("feed").spec
    learner = zoo.create("ftrl", spec)
    rng = np.random.default_rng(0)
    rows = [
        {"user_id": f"u{rng.integers(N_USERS)}", "item_id": f"i{rng.integers(N_ITEMS)}"}
        for _ in range(20_000)
    ]
    learner.learn_many(rows, (rng.random(len(rows)) < 0.1).astype(float))
    registry = FileRegistry(tmp / "registry")
    registry.publish("feed", learner.snapshot())
    topics = Topics(kafka.topic_prefix)
    ensure_topics(
        kafka,
        [topics.features, topics.feature_log, topics.predictions, topics.prediction_requests],
    )
    ensure_topics(kafka, [topics.model_updates], partitions=1)
    producer = make_producer(kafka)
    for u in range(N_USERS):
        values = {"user_impressions": u, "user_ctr": 0.05, "user_last_event_ts": time.time()}
        rec = FeatureRecord(entity="user", id=f"u{u}", values=values, ts=0.0)
        produce(producer, topics.features, encode(rec), f"user/u{u}")
    for i in range(N_ITEMS):
        values = {"item_impressions": i, "item_category": f"c{i % 7}", "item_ctr": 0.1}
        rec = FeatureRecord(entity="item", id=f"i{i}", values=values, ts=0.0)
        produce(producer, topics.features, encode(rec), f"item/i{i}")
    flush(producer)
    return registry


def _floor(app: ServingApp) -> tuple[list[float], list[float]]:
    """Raw ``session.run`` and in-process ``service.predict`` latencies."""
    rng = np.random.default_rng(2)
    sess = app.service.session("feed")
    reqs = [PredictionRequest(**_request(i, rng)) for i in range(1000)]
    now = time.time()
    featurised = []
    for r in reqs:
        user = app.replica.user(r.user_id)
        row = served_features(EXAMPLE.catalog).row
        feats = [row(r, c, user, app.replica.item(c), now) for c in r.candidates]
        featurised.append(sess.featuriser.transform_many(feats))
    raw, svc = [], []
    for _ in range(3):
        for idx, val in featurised:
            t0 = time.perf_counter()
            sess._ort.run(["prob"], {"idx": idx, "val": val})
            raw.append(time.perf_counter() - t0)
    for r in reqs:
        t0 = time.perf_counter()
        app.service.predict("feed", r)
        svc.append(time.perf_counter() - t0)
    return raw, svc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="paced phase: requests/s in all")
    ap.add_argument("--seconds", type=float, default=10.0, help="paced phase length per round")
    ap.add_argument("--sat-seconds", type=float, default=5.0, help="saturation phase length")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (servers interleaved)")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, in order")
    args = ap.parse_args()
    names = [n for n in args.servers.split(",") if n]
    unknown = set(names) - set(SERVERS)
    if unknown:
        raise SystemExit(f"expected servers among {list(SERVERS)}, got {sorted(unknown)}")

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    paced: dict[str, list[Phase]] = {n: [] for n in names}
    saturated: dict[str, list[Phase]] = {n: [] for n in names}
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, topic_prefix="bench.", partitions=4)
        registry = _fixture(tmp, kafka)
        config = ServingConfig(
            project=EXAMPLE,
            port=0,
            registry_dir=registry.root,
            kafka=kafka,
            state_dir=tmp / "state",
        )
        with ServingApp(config) as app:
            deadline = time.monotonic() + 30
            while app.replica.records_applied < N_USERS + N_ITEMS and time.monotonic() < deadline:
                time.sleep(0.05)
            raw, svc = _floor(app)
            api = build_api(app.service, app.sink, max_body_bytes=config.http.max_body_bytes)
            for rnd in range(args.rounds):
                for name in names:
                    port, stop = SERVERS[name](app, api)
                    try:
                        one = Phase(port, args.connections, args.rate, args.seconds)
                        sat = Phase(port, args.connections, 0, args.sat_seconds)
                    finally:
                        stop()
                    paced[name].append(one)
                    saturated[name].append(sat)
                    p50, p99 = _pcts(one.lat)
                    print(
                        f"round {rnd + 1} {name:18s} paced p50 {p50:.2f} ms p99 {p99:.2f} ms "
                        f"server CPU {one.cpu_us:.0f} µs/req; saturation {sat.throughput:,.0f} "
                        f"req/s ({sat.cpu_us:.0f} µs/req)",
                        flush=True,
                    )
    shutil.rmtree(tmp, ignore_errors=True)

    r50, _r99 = _pcts(raw)
    s50, _s99 = _pcts(svc)
    print(
        f"\nserving bench: {N_CANDIDATES} candidates, {args.connections} keep-alive connections, "
        f"paced at {args.rate:g} req/s for {args.seconds:g} s and saturated for "
        f"{args.sat_seconds:g} s, {args.rounds} round(s); load client on the same machine"
    )
    print(f"in-process floor: session.run p50 {r50:.3f} ms; service.predict p50 {s50:.3f} ms")
    print(
        "figures: the median over rounds of each round's p50 / p99 / throughput / server "
        "CPU per request (this process's CPU time, Kafka threads included, over requests)"
    )

    def med(xs: list[float]) -> float:
        return float(np.median(xs))

    rows = {}
    for name in names:
        rows[name] = (
            med([_pcts(p.lat)[0] for p in paced[name]]),
            med([_pcts(p.lat)[1] for p in paced[name]]),
            med([p.cpu_us for p in paced[name]]),
            med([p.throughput for p in saturated[name]]),
            med([_pcts(p.lat)[0] for p in saturated[name]]),
            sum(p.errors for p in paced[name] + saturated[name]),
        )
    base = rows[names[0]]
    print(
        f"\n| server | p50 ms @ {args.rate:g}/s | p99 ms | CPU µs/req | saturation req/s "
        f"| p50 ms saturated | p50 × | p99 × | CPU × | saturation × | non-200 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (p50, p99, cpu, sat, q50, err) in rows.items():
        print(
            f"| {name} | {p50:.2f} | {p99:.2f} | {cpu:.0f} | {sat:,.0f} | {q50:.1f} "
            f"| {p50 / base[0]:.2f} | {p99 / base[1]:.2f} | {cpu / base[2]:.2f} "
            f"| {sat / base[3]:.2f} | {err} |"
        )
    print(f"(× : against {names[0]}, measured in the same run)")


if __name__ == "__main__":
    main()
