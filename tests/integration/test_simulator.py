"""The simulator on the embedded broker, against stand-in HTTP scorers.

The scorers are stdlib HTTP servers returning deterministic scores: the system under
test is the simulator (what it asks on which surface, what it publishes, how it copes
without serving, with a model serving does not have, and with a replica gone).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.simulator import Behaviour, LoopOptions, Simulator, World
from streamlearn.simulator.shape import shape_of_events
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.broker import free_port
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from tests.example import decode_event
from tests.integration.reading import read_all

pytestmark = pytest.mark.integration

FAST = Behaviour(mean_delay_s=0.3, max_delay_s=1.0)


def stub_score(item_id: str) -> float:
    """The stand-in model: a fixed pseudo-random score per item."""
    return (int(item_id[1:]) * 7919 % 1009) / 1009


class _Scorer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: dict[str, list[str]]
    models: frozenset[str]

    def do_POST(self) -> None:
        req = msgspec.json.decode(self.rfile.read(int(self.headers["content-length"])))
        model = self.path.removeprefix("/v1/models/").removesuffix(":predict")
        assert req["surface"] == model and req["user_id"].startswith("u")
        if model not in self.models:
            self._send(404, {"error": f"expected a model among {sorted(self.models)}"})
            return
        self.seen[req["request_id"]] = req["candidates"]
        reply = {
            "request_id": req["request_id"],
            "model": model,
            "version": 1,
            "scores": [stub_score(c) for c in req["candidates"]],
        }
        self._send(200, reply)

    def _send(self, status: int, reply: dict[str, Any]) -> None:
        data = msgspec.json.encode(reply)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class StubServing:
    """The stand-in scorer on 127.0.0.1:``port``; ``seen`` maps request id → candidates.

    It serves ``models`` (404 for any other, as serving does for a model it lacks)."""

    def __init__(self, port: int, models: tuple[str, ...] = ("feed", "ads")) -> None:
        self.port = port
        self.models = frozenset(models)
        self.seen: dict[str, list[str]] = {}
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        handler = type("Handler", (_Scorer,), {"seen": self.seen, "models": self.models})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def serving() -> Iterator[StubServing]:
    stub = StubServing(free_port())
    yield stub
    stub.stop()


def _simulator(kafka: KafkaConfig, topics: Topics, url: str | list[str], **kw: Any) -> Simulator:
    ensure_topics(kafka, [topics.activity])
    return Simulator(World(11), kafka, topics, url, rate=100.0, behaviour=FAST, **kw)


def _split(msgs: list[Message]) -> tuple[list[tuple[Message, ActivityEvent]], Counter[str]]:
    good, bad = [], Counter[str]()
    for m in msgs:
        try:
            good.append((m, decode_event(m.value())))
        except ContractError as exc:
            bad[exc.reason] += 1
    return good, bad


def test_published_events_match_stats_and_engagements_follow_impressions(
    kafka: KafkaConfig, topics: Topics, serving: StubServing
) -> None:
    serving.start()
    sim = _simulator(
        kafka, topics, serving.url, bad_event_rate=0.05, options=LoopOptions(drain_s=2.0)
    )
    stats = sim.run(max_seconds=3.0)

    feed, ads = stats["surfaces"]["feed"], stats["surfaces"]["ads"]
    assert stats["served"] == stats["requests"] > 100
    assert feed["requests"] > 0 and ads["requests"] > 0
    assert ads["requests"] / stats["requests"] == pytest.approx(0.3, abs=0.12)
    assert stats["serve_errors"] == 0 and stats["engagements_dropped"] == 0
    assert stats["events_failed"] == 0 and stats["pending_engagements"] == 0
    assert stats["events_produced"] == stats["impressions"] + stats["engagements_scheduled"]
    assert stats["predict_p50_ms"] is not None and stats["predict_p99_ms"] is not None
    for s in (stats, feed, ads):
        assert s["ctr_random"] < s["ctr_oracle"]
    good, bad = _split(read_all(kafka, topics.activity))
    assert len(good) == stats["events_produced"]
    assert sum(bad.values()) == stats["bad_events_produced"] > 0
    assert set(bad) <= {"bad_json", "missing_field", "unknown_type"}
    events = [ev for _, ev in good]
    assert Counter(ev.type for ev in events) == Counter(stats["events_by_type"])
    assert len({ev.event_id for ev in events}) == len(events)
    assert all(m.key() == ev.user_id.encode() for m, ev in good)
    by_surface = Counter((ev.surface, ev.type) for ev in events)
    assert by_surface[("feed", "impression")] == feed["impressions"] == 3 * feed["requests"]
    assert by_surface[("ads", "impression")] == ads["impressions"] == 2 * ads["requests"]
    assert by_surface[("ads", "click")] == ads["clicks"]
    assert {t for s, t in by_surface if s == "ads"} <= {"impression", "click"}  # clicks only

    impressions = {
        (ev.request_id, ev.position): (m, ev) for m, ev in good if ev.type == "impression"
    }
    assert len(impressions) == stats["impressions"]
    for request_id, candidates in serving.seen.items():
        shown = [
            impressions[(request_id, p)][1] for p in range(3) if (request_id, p) in impressions
        ]
        top = sorted(candidates, key=lambda c: -stub_score(c))[: len(shown)]
        assert [ev.item_id for ev in shown] == top
        prefix = "a" if shown[0].surface == "ads" else "i"
        assert all(c.startswith(prefix) for c in candidates)
    for m, ev in good:
        if ev.type == "impression":
            assert ev.context and str(ev.context["category"]).startswith("c")
            continue
        im_msg, im = impressions[(ev.request_id, ev.position)]
        assert (ev.user_id, ev.item_id, ev.context) == (im.user_id, im.item_id, im.context)
        assert ev.surface == im.surface
        assert m.partition() == im_msg.partition()
        assert (m.offset() or 0) > (im_msg.offset() or -1)
        assert 0.0 <= ev.ts - im.ts <= FAST.max_delay_s + 1.0

    # the shape of the log as an outside reader measures it is the one the stats report
    outside, own = shape_of_events(events), stats["log_shape"]
    for key in ("requests", "users", "items_shown", "top1pct_items_impression_share"):
        assert outside[key] == own[key], key
    assert outside["top1pct_users_event_share"] == own["top1pct_users_event_share"]


def test_an_ads_model_serving_lacks_is_ranked_at_random_and_counted(
    kafka: KafkaConfig, topics: Topics
) -> None:
    feed_only = StubServing(free_port(), models=("feed",))
    feed_only.start()
    try:
        sim = _simulator(kafka, topics, feed_only.url, options=LoopOptions(drain_s=0.0))
        stats = sim.run(max_seconds=2.0)
    finally:
        feed_only.stop()
    feed, ads = stats["surfaces"]["feed"], stats["surfaces"]["ads"]
    assert feed["served"] == feed["requests"] > 50
    assert ads["requests"] > 10 and ads["requests_by_outcome"] == {"http_error": ads["requests"]}
    assert ads["impressions"] == 2 * ads["requests"]  # shown anyway, at random
    assert ads["ctr_model"] is None  # no served ads request: no model CTR
    assert ads["fallback_requests"] == ads["requests"] and ads["ctr_fallback"] is not None
    assert stats["ctr_model"] is not None  # the feed's keys are still the feed's
    assert stats["serve_errors"] == ads["requests"]


def test_requests_spread_over_replicas_and_fail_over_when_one_goes(
    kafka: KafkaConfig, topics: Topics
) -> None:
    a, b = StubServing(free_port()), StubServing(free_port())
    a.start()
    b.start()
    try:
        sim = _simulator(kafka, topics, [a.url, b.url], options=LoopOptions(drain_s=0.0))
        first = sim.run(max_seconds=1.5)
        assert first["served"] == first["requests"] > 50
        calls = first["replica_calls"]
        assert calls[a.url]["served"] == pytest.approx(calls[b.url]["served"], abs=1)
        assert first["failovers"] == 0
        a.stop()
        second = sim.run(max_seconds=1.5)
    finally:
        a.stop()
        b.stop()
    # every request was still served, by the replica that is left
    assert second["served"] == second["requests"] > first["requests"] + 50
    assert second["failovers"] >= 1
    assert second["replica_calls"][a.url].get("unavailable", 0) >= 1
    assert len(b.seen) == second["served"] - calls[a.url]["served"]


def test_keeps_going_on_random_ranking_until_serving_comes_up(
    kafka: KafkaConfig, topics: Topics, serving: StubServing
) -> None:
    sim = _simulator(kafka, topics, serving.url, options=LoopOptions(drain_s=0.0))
    threading.Timer(1.0, serving.start).start()
    stats = sim.run(max_seconds=2.5)

    outcomes = stats["requests_by_outcome"]
    assert outcomes["unavailable"] > 20 and outcomes["served"] > 20
    assert stats["serve_errors"] == outcomes["unavailable"]
    assert stats["requests"] == stats["served"] + stats["serve_errors"]
    assert stats["latency_samples"] == stats["served"]
    feed, ads = stats["surfaces"]["feed"], stats["surfaces"]["ads"]
    assert stats["impressions"] == 3 * feed["requests"] + 2 * ads["requests"]
    assert len(serving.seen) == stats["served"]
    good, bad = _split(read_all(kafka, topics.activity))
    assert not bad
    assert len(good) == stats["events_produced"]
    # stopped without a drain: what was scheduled was either published or dropped
    published = stats["events_produced"] - stats["impressions"]
    assert published + stats["engagements_dropped"] == stats["engagements_scheduled"]
    assert stats["pending_engagements"] == 0


def test_stops_on_request_count_and_stop_event(kafka: KafkaConfig, topics: Topics) -> None:
    sim = _simulator(kafka, topics, "http://127.0.0.1:1", options=LoopOptions(drain_s=0.0))
    assert sim.run(max_requests=25)["requests"] == 25
    assert sim.run(max_requests=5)["requests"] == 30
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    stats = sim.run(stop_event=stop)
    assert time.monotonic() - started < 3.0
    assert stats["requests"] > 30
    assert stats["served"] == 0 and stats["ctr_model"] is None
    with pytest.raises(ValueError, match="max_seconds"):
        sim.run()


def _impressions(metrics_text: str) -> float:
    """The simulator's acknowledged impressions in a /metrics page, every surface."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "streamlearn_simulator_events_produced_total"
        and sample.labels.get("type") == "impression"
    )


def test_command_serves_metrics_and_stops_cleanly_on_sigterm(
    kafka: KafkaConfig, tmp_path: Path
) -> None:
    metrics_port, summary = free_port(), tmp_path / "sim.json"
    env = {
        **os.environ,
        "STREAMLEARN_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "STREAMLEARN_TOPIC_PREFIX": kafka.topic_prefix,
    }
    down = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    argv = [sys.executable, "-m", "streamlearn", "simulate", "--rate", "50", "--users", "200"]
    argv += ["--serving-url", f"{down[0]},{down[1]}", "--serving-url", down[2]]
    argv += ["--drain-seconds", "1", "--ads-fraction", "0.5"]
    argv += ["--metrics-port", str(metrics_port), "--summary-json", str(summary)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = ""
        deadline = time.monotonic() + 30
        while _impressions(text) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "no metrics from simulate"
            time.sleep(0.3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                    text = r.read().decode()
            except OSError:
                continue
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, out.decode()
    assert 'streamlearn_simulator_requests_total{outcome="unavailable",surface="feed"}' in text
    stats = json.loads(summary.read_text())
    assert stats["requests"] > 0 and stats["served"] == 0
    assert set(stats["replica_calls"]) == set(down)  # all three, from both flags
    assert stats["surfaces"]["ads"]["requests"] > 0
    assert stats["events_produced"] == stats["impressions"] + stats["engagements"] + stats["hides"]
    assert json.loads(out.decode().strip().splitlines()[-1]) == stats
