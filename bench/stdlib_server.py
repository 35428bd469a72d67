"""The baseline of ``bench_http_servers.py``: serving's former HTTP server, kept as it was.

It is the standard library's ``ThreadingHTTPServer`` (a thread per connection, keep-alive)
that served the native API before the ASGI app on uvicorn (``serving/http.py``,
``serving/server.py``). It has no request or keep-alive time-outs and no connection cap,
which is why it was replaced; the benchmark runs it beside the new server on the same
service, so the two are compared in the same process and the same run.

Its original description follows.

The HTTP/1.1 API of the prediction service (stdlib ``ThreadingHTTPServer``, keep-alive).

Endpoints:

* ``POST /v1/models/{model}:predict`` — a prediction request →
  ``{"request_id", "model", "version", "scores"}``; for a vision model
  ``{"request_id", "image" | "image_png_base64"}`` → ``{…, "probs", "classes"}``;
* ``GET /v1/models`` — every served model with its serving version and all versions and
  stages in the registry;
* ``GET /healthz`` — liveness, with the version each model serves;
* ``GET /metrics`` — Prometheus exposition of the process registry.

Errors are JSON ``{"error": "..."}`` saying what was expected and what was got: 400 bad
request, 404 unknown model or path, 411/413 body length, 503 no model version yet.
Each response is written with one ``send`` and ``TCP_NODELAY`` set, so small replies on
keep-alive connections are not held back by Nagle's algorithm and delayed ACKs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamlearn.models.errors import ModelError
from streamlearn.serving.errors import BadRequest, ModelNotFound, ModelNotReady, ServingError
from streamlearn.serving.metrics import HTTP_REQUESTS
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import Sink
from streamlearn.streams.contracts import decode_request, encode
from streamlearn.streams.errors import ContractError

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1 << 20
JSON: Final = "application/json"
_PREDICT = re.compile(r"^/v1/models/([^/:]+):predict$")
_REQUEST_SHAPE: Final = (
    'expected {"request_id": str, "user_id": str, "surface": "feed" | "ads", '
    '"candidates": [str, ...], "context"?: {str: str | number}}'
)


class HttpError(ServingError):
    """An error answered with ``status`` (and, when ``close``, the connection closed)."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


class ServingHTTPServer(ThreadingHTTPServer):
    """One thread per connection; connections are kept alive between requests."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], service: PredictionService, sink: Sink | None
    ) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self.sink = sink

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with port 0)."""
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    server: ServingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser (bad request line, headers, method) as JSON."""
        self.close_connection = True
        self._send(code, _error(message or HTTPStatus(code).phrase))

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        try:
            if path == "/healthz":
                svc = self.server.service
                body = {"status": "ok", "models": {m: svc.version(m) for m in svc.models}}
                self._send(200, msgspec.json.encode(body))
            elif path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/v1/models":
                self._send(200, msgspec.json.encode({"models": _models(self.server.service)}))
            else:
                raise HttpError(404, f"expected GET /v1/models, /healthz or /metrics, got {path}")
        except HttpError as exc:
            self._send(exc.status, _error(str(exc)))
        except ModelError as exc:
            log.error("GET %s: %s", path, exc)
            self._send(500, _error(f"registry error: {exc}"))

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        headers: Sequence[tuple[str, str]] = ()
        try:
            body = self._read_body()  # first, so the connection stays in sync on any error
            match = _PREDICT.match(path)
            if match is None:
                raise HttpError(404, f"expected POST /v1/models/<model>:predict, got {path}")
            self._send(200, self._predict(match.group(1), body))
            return
        except HttpError as exc:
            code, message = exc.status, str(exc)
            self.close_connection = self.close_connection or exc.close
        except (BadRequest, ContractError) as exc:
            code, message = 400, str(exc)
        except ModelNotFound as exc:
            code, message = 404, str(exc)
        except ModelNotReady as exc:
            code, message, headers = 503, str(exc), (("Retry-After", "1"),)
        except Exception as exc:
            log.exception("POST %s failed", path)
            code, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        self._send(code, _error(message), headers=headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "expected a Content-Length body, got chunked encoding", True)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HttpError(411, f"expected a Content-Length header, got {length!r}", True)
        n = int(length)
        if n > MAX_BODY_BYTES:
            raise HttpError(
                413, f"expected a body of at most {MAX_BODY_BYTES} bytes, got {n}", True
            )
        body = self.rfile.read(n)
        if len(body) != n:
            raise HttpError(400, f"expected {n} body bytes, got {len(body)}", True)
        return body

    def _predict(self, model: str, body: bytes) -> bytes:
        svc = self.server.service
        if svc.session(model).kind == "vision":
            try:
                payload = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"expected a JSON object, got invalid JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise BadRequest(f"expected a JSON object, got {type(payload).__name__}")
            return msgspec.json.encode(svc.predict_vision(model, payload))
        try:
            request = decode_request(body, MAX_BODY_BYTES)
        except ContractError as exc:
            raise BadRequest(f"{_REQUEST_SHAPE}; got: {exc}") from None
        reply, record = svc.predict(model, request)
        if self.server.sink is not None:
            self.server.sink.log_prediction(reply, record)
        return encode(reply)

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = JSON,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        head = [
            f"HTTP/1.1 {code} {HTTPStatus(code).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers),
        ]
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        HTTP_REQUESTS.labels(str(code)).inc()


def _error(message: str) -> bytes:
    return msgspec.json.encode({"error": message})


def _models(service: PredictionService) -> list[dict[str, Any]]:
    out = []
    for model in service.models:
        try:
            sess = service.session(model)
            kind = sess.kind
        except ModelNotReady:
            kind = None
        versions = [
            {
                "version": mv.version,
                "stage": mv.stage,
                "created_at": mv.metadata.get("created_at"),
                "learner": mv.metadata.get("learner"),
            }
            for mv in service.registry.versions(model)
        ]
        out.append(
            {
                "name": model,
                "kind": kind,
                "serving_version": service.version(model),
                "versions": versions,
            }
        )
    return out
