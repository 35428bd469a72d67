"""The HTTP server's time-outs, caps and shutdown, over real sockets on loopback.

Each test drives raw bytes at a real server (uvicorn with serving's protocol); a small
router stands in for the prediction API where a slow handler is needed. Every wait is
bounded; short time-outs keep the whole file to a few seconds.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.http import ServingAPI, build_api
from streamlearn.serving.routing import Request, Response, Router
from streamlearn.serving.server import HttpLimits, HttpServer, bind, watch_lag
from streamlearn.serving.service import PredictionService
from tests.example import CATALOG
from tests.unit.serving.helpers import DictFeatures, publish_ftrl

LIMITS = HttpLimits(
    max_connections=4,
    max_body_bytes=4096,
    max_header_bytes=2048,
    request_timeout_s=0.6,
    keep_alive_s=0.6,
    shutdown_timeout_s=3.0,
)
PREDICT = b'{"request_id": "r", "user_id": "u", "surface": "feed", "candidates": ["a", "b"]}'


def _predict_bytes(body: bytes = PREDICT) -> bytes:
    head = (
        f"POST /v1/models/feed:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpServer]:
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed"], CATALOG)
    service.load(publish_ftrl(registry))
    api = build_api(service, None, max_body_bytes=LIMITS.max_body_bytes)
    srv = HttpServer(api, "127.0.0.1", 0, LIMITS).start()
    yield srv
    srv.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_all(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Everything until the server closes (bounded by ``timeout_s``)."""
    sock.settimeout(timeout_s)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return out
        if not chunk:
            return out
        out += chunk


def _status_and_error(raw: bytes) -> tuple[int, str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"], head.lower()


def _one_response(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(5)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before answering"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), head.lower()


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    ok = conn.getresponse().status == 200
    conn.close()
    return ok


def test_a_client_sending_one_byte_at_a_time_gets_408_and_is_closed(server: HttpServer) -> None:
    sock = _connect(server.port)
    started = time.monotonic()
    request = _predict_bytes()
    try:
        for b in request:  # far slower than the request time-out allows
            sock.sendall(bytes([b]))
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, error, head = _status_and_error(_read_all(sock))
    took = time.monotonic() - started
    assert status == 408 and "within 0.6 s" in error and b"connection: close" in head
    assert took < 2.5, took
    assert _healthy(server.port)


def test_a_body_that_stops_halfway_gets_408(server: HttpServer) -> None:
    sock = _connect(server.port)
    sock.sendall(_predict_bytes()[:-10])
    status, error, _ = _status_and_error(_read_all(sock))
    assert status == 408 and "got only part of it" in error


def test_idle_connections_are_closed_and_stray_bytes_do_not_keep_them(server: HttpServer) -> None:
    quiet = _connect(server.port)
    started = time.monotonic()
    assert _read_all(quiet) == b""  # closed without a word
    assert time.monotonic() - started < 2.0
    chatty = _connect(server.port)
    chatty.sendall(_predict_bytes())
    assert _one_response(chatty)[0] == 200
    started = time.monotonic()
    try:
        while time.monotonic() - started < 3:
            chatty.sendall(b"\r\n")  # not a request: must not extend the idle time-out
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - started < 2.5
    _read_all(chatty, 1.0)


@contextmanager
def _server_with(tmp_path: Path, limits: HttpLimits) -> Iterator[HttpServer]:
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed"], CATALOG)
    service.load(publish_ftrl(registry))
    srv = HttpServer(build_api(service, None), "127.0.0.1", 0, limits).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_requests_keep_a_connection_open_past_its_idle_time_out(tmp_path: Path) -> None:
    limits = HttpLimits(request_timeout_s=0.3, keep_alive_s=0.5, shutdown_timeout_s=3.0)
    with _server_with(tmp_path, limits) as srv:
        sock = _connect(srv.port)
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # three idle time-outs
            sock.sendall(_predict_bytes())
            assert _one_response(sock)[0] == 200
            time.sleep(0.15)
        assert _read_all(sock, 3.0) == b""  # then closed when idle, without a word
        assert time.monotonic() - started < 2.5


def test_a_slow_request_after_a_response_gets_408_at_the_request_time_out(
    tmp_path: Path,
) -> None:
    """The request's deadline comes before the idle one set by the response before it."""
    limits = HttpLimits(request_timeout_s=0.3, keep_alive_s=4.0, shutdown_timeout_s=3.0)
    with _server_with(tmp_path, limits) as srv:
        sock = _connect(srv.port)
        sock.sendall(_predict_bytes())
        assert _one_response(sock)[0] == 200
        slow = time.monotonic()
        sock.sendall(_predict_bytes()[:-10])
        status, error, _ = _status_and_error(_read_all(sock))
        took = time.monotonic() - slow
        assert status == 408 and "within 0.3 s" in error
        assert took < 1.5, took


@pytest.mark.parametrize("streamed", [False, True])
def test_oversized_headers_get_431(server: HttpServer, streamed: bool) -> None:
    sock = _connect(server.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
    try:
        if streamed:
            for i in range(0, len(head), 512):
                sock.sendall(head[i : i + 512])
                time.sleep(0.01)
        else:
            sock.sendall(head)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, error, head_out = _status_and_error(_read_all(sock))
    assert status == 431 and "at most 2048 bytes" in error and b"connection: close" in head_out


def test_bodies_over_the_limit_get_413_and_garbage_gets_a_json_400(server: HttpServer) -> None:
    sock = _connect(server.port)
    sock.sendall(_predict_bytes(b"{" + b" " * 5000 + b"}"))
    status, error, _ = _status_and_error(_read_all(sock))
    assert status == 413 and "at most 4096 bytes" in error
    sock = _connect(server.port)
    sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
    status, error, _ = _status_and_error(_read_all(sock))
    assert status == 400 and "parser rejects" in error
    assert _healthy(server.port)


def test_connections_beyond_the_cap_get_503_and_are_closed(server: HttpServer) -> None:
    held = [_connect(server.port) for _ in range(LIMITS.max_connections)]
    for s in held:
        s.sendall(_predict_bytes())
        assert _one_response(s)[0] == 200
    extra = _connect(server.port)
    extra.sendall(_predict_bytes())
    raw = _read_all(extra)
    status, error, head = _status_and_error(raw)
    assert status == 503 and "at most 4 connections" in error
    assert b"retry-after: 1" in head and b"connection: close" in head
    held.pop().close()
    time.sleep(0.1)
    again = _connect(server.port)
    again.sendall(_predict_bytes())
    assert _one_response(again)[0] == 200
    for s in [*held, again]:
        s.close()


def test_stop_drains_the_requests_in_flight(tmp_path: Path) -> None:
    router = Router()
    entered = threading.Event()

    @router.route("POST", "/slow", summary="", tag="test", request=bytes, responses={200: None})
    async def slow(req: Request) -> Response:
        entered.set()
        await asyncio.sleep(0.5)
        return Response(200, b'{"done": true}')

    server = HttpServer(ServingAPI(router), "127.0.0.1", 0, LIMITS).start()
    port = server.port
    sock = _connect(port)
    sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert entered.wait(5)
    stopper = threading.Thread(target=server.stop)
    started = time.monotonic()
    stopper.start()
    raw = _read_all(sock)
    stopper.join(10)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b'{"done": true}')
    assert b"connection: close" in raw.lower()  # drained, then closed
    assert 0.2 < time.monotonic() - started < 5
    with pytest.raises(OSError):
        _connect(port)  # no longer accepting


def test_stop_answers_a_request_still_coming_in_on_the_direct_path(tmp_path: Path) -> None:
    router = Router()

    @router.route("POST", "/echo", summary="", tag="test", request=bytes, responses={200: None})
    def echo(req: Request) -> Response:
        return Response(200, req.body)

    server = HttpServer(ServingAPI(router), "127.0.0.1", 0, LIMITS).start()
    sock = _connect(server.port)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}")
    time.sleep(0.1)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.2)
    sock.sendall(b"[]")
    raw = _read_all(sock)
    stopper.join(10)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"{}[]")
    assert b"connection: close" in raw.lower()


def test_binding_a_port_in_use_fails_at_once() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_a_blocked_event_loop_shows_in_its_lag(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlearn.serving.server as module

    seen: list[float] = []

    class Lag:
        def observe(self, seconds: float) -> None:
            seen.append(seconds)

    monkeypatch.setattr(module, "EVENT_LOOP_LAG", Lag())

    async def blocked() -> None:
        watcher = asyncio.create_task(watch_lag(0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.08)  # something holds the loop
        await asyncio.sleep(0.05)
        watcher.cancel()

    asyncio.run(blocked())
    assert max(seen) >= 0.05
    lag = server._server._lag  # the server watches its own loop
    assert lag is not None and not lag.done()


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_a_response_is_one_write_and_an_interim_one_goes_at_once() -> None:
    from streamlearn.serving.server import _OneWrite

    rec = _Recorder()
    out = _OneWrite(rec)  # type: ignore[arg-type]
    out.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert rec.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(rec.writes) == 1  # held for the body
    out.write(b"{}")
    assert rec.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    out.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    out.close()  # what is held goes before the close
    assert rec.writes[2] == b"HTTP/1.1 204 No Content\r\n\r\n" and rec.closed


def test_a_client_expecting_100_continue_gets_it_then_its_answer(server: HttpServer) -> None:
    sock = _connect(server.port)
    head = (
        f"POST /v1/models/feed:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(PREDICT)}\r\n\r\n"
    )
    sock.sendall(head.encode())
    sock.settimeout(5)
    assert sock.recv(100).startswith(b"HTTP/1.1 100")
    sock.sendall(PREDICT)
    status, _ = _one_response(sock)
    assert status == 200
    sock.close()


def _responses(sock: socket.socket, n: int) -> list[bytes]:
    """The next ``n`` whole responses on ``sock`` (each by its Content-Length)."""
    sock.settimeout(5)
    buf, out = b"", []
    while len(out) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            end = head_end + 4 + length
            if len(buf) >= end:
                out.append(buf[:end])
                buf = buf[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed before answering"
        buf += chunk
    return out


def _predict_with(request_id: str, model: str = "feed", body: bytes | None = None) -> bytes:
    body = body or PREDICT.replace(b'"r"', json.dumps(request_id).encode(), 1)
    head = f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: x\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_the_direct_path_answers_byte_for_byte_as_the_asgi_path(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain handlers on a kept-alive connection are answered without the ASGI app, with
    the same bytes it writes: successes, the handler's errors and the router's."""
    from streamlearn.serving.server import _Protocol

    requests = [
        _predict_with("a"),
        _predict_with("b", body=b"{not json"),
        _predict_with("c", model="nope"),
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        _predict_with("d"),
    ]
    through_asgi: list[str] = []
    asgi = ServingAPI._http

    async def spy(self: ServingAPI, scope: dict, receive: object, send: object) -> None:
        through_asgi.append(scope["path"])
        await asgi(self, scope, receive, send)  # type: ignore[arg-type]

    monkeypatch.setattr(ServingAPI, "_http", spy)

    def answers() -> list[bytes]:
        sock = _connect(server.port)
        got = []
        for raw in requests:
            sock.sendall(raw)
            got += _responses(sock, 1)
        sock.close()
        return got

    direct = answers()
    assert through_asgi == ["/nothing"]  # the router's own 404: uvicorn's path
    monkeypatch.setattr(_Protocol, "_direct_request", lambda self: None)
    assert answers() == direct
    assert len(through_asgi) == 1 + len(requests)
    assert [int(r.split(b" ", 2)[1]) for r in direct] == [200, 400, 404, 404, 200, 200]


def test_pipelined_requests_are_answered_in_order_behind_one_in_flight(
    server: HttpServer,
) -> None:
    """A coroutine handler's request (the models listing, read in a thread) and two
    predictions behind it in one write: the predictions wait their turn."""
    sock = _connect(server.port)
    listing = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(listing + _predict_with("p1") + _predict_with("p2") + listing)
    got = [r.partition(b"\r\n\r\n")[2] for r in _responses(sock, 4)]
    assert b'"models"' in got[0] and b'"models"' in got[3]
    assert [json.loads(b)["request_id"] for b in got[1:3]] == ["p1", "p2"]
    sock.sendall(_predict_with("p3"))  # the connection goes on, on the direct path
    assert json.loads(_responses(sock, 1)[0].partition(b"\r\n\r\n")[2])["request_id"] == "p3"


def test_a_body_in_pieces_is_answered_once_whole(server: HttpServer) -> None:
    sock = _connect(server.port)
    raw = _predict_with("slowly")
    head_end = raw.index(b"\r\n\r\n") + 4
    for piece in (raw[:head_end], raw[head_end : head_end + 10], raw[head_end + 10 :]):
        sock.sendall(piece)
        time.sleep(0.05)
    (answer,) = _responses(sock, 1)
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["request_id"] == "slowly"
