"""The serving client: outcomes of one replica, spreading and failover over several."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import msgspec
import pytest

from streamlearn.simulator.scoring import Replicas, ScoringClient, parse_urls
from streamlearn.streams.contracts import PredictionRequest
from streamlearn.streams.kafka.broker import free_port

REQ = PredictionRequest(request_id="r1", user_id="u1", surface="feed", candidates=["i1", "i22"])


class _Scorer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    reply: ClassVar[dict[str, object]] = {}
    status: ClassVar[int] = 200
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.paths.append(self.path)
        req = msgspec.json.decode(body)
        out = dict(self.reply) or {
            "request_id": req["request_id"],
            "model": "feed",
            "version": 1,
            "scores": [float(len(c)) for c in req["candidates"]],
        }
        data = msgspec.json.encode(out)
        self.send_response(self.status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Stub:
    """A stand-in serving replica on 127.0.0.1."""

    def __init__(self) -> None:
        self.handler = type("Handler", (_Scorer,), {"reply": {}, "status": 200, "paths": []})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs() -> Iterator[list[Stub]]:
    made = [Stub(), Stub()]
    yield made
    for s in made:
        s.stop()


def test_scoring_client_outcomes(stubs: list[Stub]) -> None:
    stub = stubs[0]
    with ScoringClient(stub.url) as client:
        ok = client.score("feed", REQ)
        assert ok.outcome == "served" and ok.scores == [2.0, 3.0] and ok.status == 200
        assert ok.latency_s is not None and ok.latency_s > 0 and ok.replica == stub.url
        assert client.score("ads", REQ).outcome == "served"
        assert stub.handler.paths == ["/v1/models/feed:predict", "/v1/models/ads:predict"]
        stub.handler.status = 503
        assert client.score("feed", REQ).outcome == "unavailable"
        stub.handler.status = 404
        assert client.score("feed", REQ).outcome == "http_error"
        stub.handler.status = 200
        stub.handler.reply = {"request_id": "r1", "model": "feed", "version": 1, "scores": [1.0]}
        bad = client.score("feed", REQ)
        assert bad.outcome == "bad_reply" and bad.latency_s is None
    with ScoringClient(f"http://127.0.0.1:{free_port()}") as down:
        gone = down.score("feed", REQ)
        assert gone.outcome == "unavailable" and gone.status is None


def test_requests_are_spread_round_robin(stubs: list[Stub]) -> None:
    with Replicas([s.url for s in stubs]) as replicas:
        got = [replicas.score("feed", REQ) for _ in range(10)]
    assert all(g.outcome == "served" and g.attempts == 1 for g in got)
    assert [g.replica for g in got] == [stubs[0].url, stubs[1].url] * 5
    assert len(stubs[0].handler.paths) == len(stubs[1].handler.paths) == 5


def test_a_replica_that_does_not_answer_is_failed_over_and_skipped(stubs: list[Stub]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Replicas([dead, stubs[0].url], retry_after_s=60.0) as replicas:
        first = replicas.score("feed", REQ)
        assert first.outcome == "served" and first.attempts == 2 and first.replica == stubs[0].url
        assert first.latency_s is not None  # the failed attempt is part of what was waited
        # the dead replica is skipped now: no more failovers
        later = [replicas.score("feed", REQ) for _ in range(6)]
    assert all(g.outcome == "served" and g.attempts == 1 for g in later)
    assert len(stubs[0].handler.paths) == 7


def test_503_fails_over_but_a_404_is_the_answer(stubs: list[Stub]) -> None:
    a, b = stubs
    a.handler.status = 503  # no model version loaded yet on this replica
    with Replicas([a.url, b.url]) as replicas:
        got = replicas.score("feed", REQ)
        assert got.outcome == "served" and got.replica == b.url and got.attempts == 2
        a.handler.status = b.handler.status = 404  # a model no replica serves
        nf = replicas.score("ads", REQ)
        assert nf.outcome == "http_error" and nf.attempts == 1 and nf.scores is None
        a.handler.status = b.handler.status = 503
        both = replicas.score("feed", REQ)
        assert both.outcome == "unavailable" and both.attempts == 2


def test_when_every_replica_is_down_each_is_still_tried() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with Replicas(urls, retry_after_s=60.0) as replicas:
        assert replicas.score("feed", REQ).attempts == 2
        again = replicas.score("feed", REQ)  # all marked down: try them all anyway
        assert again.outcome == "unavailable" and again.attempts == 2


def test_parse_urls() -> None:
    assert parse_urls("http://a:1") == ("http://a:1",)
    assert parse_urls(["http://a:1,http://b:2/", " http://c:3 "]) == (
        "http://a:1",
        "http://b:2",
        "http://c:3",
    )
    for bad in ("", "ftp://a", "http://a:1,http://a:1"):
        with pytest.raises(ValueError):
            parse_urls(bad)
