"""Property-based fuzzing of the HTTP API against the real server over loopback.

Whatever the body or the bytes on the wire, the server answers 2xx/4xx (never 5xx),
its answers are JSON ``{"error"}`` when they are errors, and the same server process keeps
answering afterwards. Bodies are drawn from arbitrary bytes, arbitrary JSON, and valid
requests with fields replaced by values of the wrong type; raw requests from arbitrary
bytes and from mangled request lines and headers.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.http import build_api
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.serving.service import PredictionService
from tests.example import CATALOG
from tests.unit.serving.helpers import (
    DictFeatures,
    publish_ftrl,
    publish_raw,
    vision_graph,
    vision_metadata,
)

LIMITS = HttpLimits(max_body_bytes=64 * 1024, request_timeout_s=2.0, keep_alive_s=5.0)
PATHS = (
    "/v1/models/feed:predict",
    "/v1/models/digits:predict",
    "/v2/models/feed/infer",
    "/v2/models/digits/infer",
    "/v2/models/feed/versions/1/infer",
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
VALID_V1 = {"request_id": "r", "user_id": "u1", "surface": "feed", "candidates": ["i1", "i2"]}
VALID_V2 = {
    "id": "r",
    "inputs": [
        {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]},
        {"name": "surface", "shape": [1], "datatype": "BYTES", "data": ["feed"]},
        {"name": "candidates", "shape": [2], "datatype": "BYTES", "data": ["i1", "i2"]},
    ],
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid /v1 or /v2 request with one field (or one input's field) replaced."""
    if draw(st.booleans()):
        body: dict[str, Any] = dict(VALID_V1)
        body[draw(st.sampled_from([*body, "context", "image"]))] = draw(json_values)
    else:
        body = json.loads(json.dumps(VALID_V2))
        target = draw(st.sampled_from(body["inputs"]))
        key = draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters"]))
        target[key] = draw(json_values)
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated(),
)


class Target:
    def __init__(self, tmp: Path) -> None:
        registry = FileRegistry(tmp)
        service = PredictionService(registry, DictFeatures(), ["feed", "digits"], CATALOG)
        service.load(publish_ftrl(registry))
        service.load(publish_raw(registry, vision_graph(), vision_metadata(), model="digits"))
        api = build_api(service, None, max_body_bytes=LIMITS.max_body_bytes)
        self.server = HttpServer(api, "127.0.0.1", 0, LIMITS).start()
        self.conn = self._connect()
        self.tried = 0

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        self.tried += 1
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.conn = self._connect()
            raise
        if resp.getheader("connection") == "close":
            self.conn.close()
            self.conn = self._connect()
        return resp.status, data, resp


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    t = Target(tmp_path_factory.mktemp("fuzz"))
    yield t
    t.conn.close()
    t.server.stop()


@FUZZ
@given(path=st.sampled_from(PATHS), body=bodies, binary_header=st.booleans())
def test_any_body_gets_an_answer_below_500(
    target: Target, path: str, body: bytes, binary_header: bool
) -> None:
    headers = {"Content-Type": "application/json"}
    if binary_header and path.startswith("/v2"):
        headers["Inference-Header-Content-Length"] = str(max(0, len(body) - 3))
    status, data, resp = target.post(path, body, headers)
    assert status < 500, (status, data)
    if status >= 400:
        assert set(json.loads(data)) == {"error"}
        assert resp.getheader("content-type") == "application/json"


request_lines = st.builds(
    lambda method, path, version, header, value, body: (
        (
            f"{method} {path} {version}\r\n{header}: {value}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("utf-8", "replace")
        + body
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "G\x00T"]),
    path=st.sampled_from((*PATHS, "/", "/v2", "//..//", "/%00", "/v1/models/%2e%2e:predict"))
    | st.text(max_size=30),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "http/1.1", ""]),
    header=st.sampled_from(["Host", "Transfer-Encoding", "Content-Length", "Expect", "X"])
    | st.text(max_size=10),
    value=st.sampled_from(["chunked", "100-continue", "-1", "99999999999999999999"])
    | st.text(max_size=20),
    body=st.binary(max_size=64),
)


@FUZZ
@given(raw=st.one_of(st.binary(min_size=1, max_size=256), request_lines))
def test_any_bytes_on_the_wire_get_a_4xx_or_a_close_never_a_5xx(target: Target, raw: bytes) -> None:
    target.tried += 1
    with socket.create_connection(("127.0.0.1", target.server.port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.settimeout(LIMITS.request_timeout_s + 3)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            assert not line[9:].startswith(b"5"), answer


def test_the_server_survived_the_fuzzing(target: Target) -> None:
    status, _, _ = target.post("/v1/models/feed:predict", json.dumps(VALID_V1).encode(), {})
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", target.server.port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    print(f"fuzzed {target.tried} requests")
