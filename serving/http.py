"""The HTTP API of the prediction service, as one ASGI application.

:class:`ServingAPI` routes a request (:mod:`streamlearn.serving.routing`), reads its body when the
route takes one (a ``Content-Length`` is required: 411 without, 413 over the limit),
calls the handler and writes the response with an explicit ``Content-Length``. Errors
are mapped in one place: every :class:`streamlearn.models.errors.StreamlearnError` (serving's own
tree, and a lower layer's error that was not translated) carries its status, headers and
whether to close the connection, and becomes ``{"error": "..."}``; anything else is
logged with its traceback and answered 500. Handlers are plain functions run on
the event loop (a prediction is a few hundred microseconds of CPU; handing it to a
thread would cost more than it saves) or coroutines for work that waits (registry
reads and writes run in a thread).

:func:`build_api` assembles the native API (:mod:`streamlearn.serving.v1`), the Open Inference
Protocol (:mod:`streamlearn.serving.oip`), the admin endpoints (:mod:`streamlearn.serving.admin`)
and the feature store's online reads (:mod:`streamlearn.serving.feature_api`), and serves
their OpenAPI document at ``/openapi.json``. The server that runs it, with its limits
and time-outs, is :mod:`streamlearn.serving.server`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any, Final, cast

import msgspec
from pydantic import SecretStr

from streamlearn.models.errors import StreamlearnError
from streamlearn.serving.admin import admin_routes
from streamlearn.serving.errors import LengthRequired, PayloadTooLarge, ServingError
from streamlearn.serving.feature_api import StoredFeatures, feature_routes
from streamlearn.serving.metrics import HTTP_REQUESTS
from streamlearn.serving.oip import oip_routes, server_version
from streamlearn.serving.openapi import openapi_document
from streamlearn.serving.routing import JSON, Request, Response, Route, Router
from streamlearn.serving.schema import ErrorReply
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import Sink
from streamlearn.serving.v1 import v1_routes
from streamlearn.streams.contracts import ModelUpdate

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Default cap on a request body.
MAX_BODY_BYTES: Final = 1 << 20
_ENCODER: Final = msgspec.json.Encoder()


class _Disconnected(Exception):
    """The client went away while its body was being read: nothing to answer."""


def error_response(exc: StreamlearnError, close: bool = False) -> Response:
    """The response for ``exc``: its status, headers and ``{"error": str(exc)}``."""
    body = _ENCODER.encode(ErrorReply(str(exc)))
    return Response(exc.status, body, headers=exc.headers, close=close or exc.close)


def raw_response(response: Response) -> bytes:
    """``response`` as HTTP/1.1 bytes, for answers written to the transport directly
    (before any handler runs, or by the server's direct path); counted like every other."""
    head = [
        _STATUS_LINES.get(response.status) or _status_line(response.status),
        b"content-length: %d\r\n" % len(response.body),
    ]
    if response.body or response.content_type != JSON:
        head.append(b"content-type: " + response.content_type.encode("latin-1") + b"\r\n")
    for k, v in response.headers:
        head.append(f"{k}: {v}\r\n".encode("latin-1"))
    if response.close:
        head.append(b"connection: close\r\n")
    head += (b"\r\n", response.body)
    _count(response.status)
    return b"".join(head)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
    return line


_STATUS_LINES: dict[int, bytes] = {}
_COUNTERS: dict[int, Any] = {}


def _count(status: int) -> None:
    counter = _COUNTERS.get(status)
    if counter is None:
        counter = _COUNTERS[status] = HTTP_REQUESTS.labels(str(status))
    counter.inc()


class ServingAPI:
    """The ASGI application: ``router``'s routes, bodies up to ``max_body_bytes``."""

    def __init__(self, router: Router, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            route, params = self.router.match(method, path)
            headers = dict(scope["headers"])
            body = b"" if route.request is None else await self._body(headers, receive)
            query = scope.get("query_string", b"").decode("latin-1")
            request = Request(method, path, params, headers, body, query)
            if route.is_async:
                response = await cast(Awaitable[Response], route.handler(request))
            else:
                response = self.answer(route, request)
        except StreamlearnError as exc:
            response = _failed(method, path, exc)
        except _Disconnected:
            return
        except Exception as exc:
            response = _crashed(method, path, exc)
        await self.respond(send, response)

    def answer(self, route: Route, request: Request) -> Response:
        """The response of a plain (not coroutine) route to ``request``, errors included."""
        try:
            return cast(Response, route.handler(request))
        except StreamlearnError as exc:
            return _failed(request.method, request.path, exc)
        except Exception as exc:
            return _crashed(request.method, request.path, exc)

    def body_length(self, headers: Mapping[bytes, bytes]) -> int:
        """The length of the body ``headers`` announce; raises :class:`LengthRequired`
        (chunked, or no ``Content-Length``) or :class:`PayloadTooLarge`."""
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            raise LengthRequired("expected a Content-Length body, got chunked encoding")
        length = headers.get(b"content-length")
        if length is None or not length.isdigit():
            got = None if length is None else length.decode("latin-1")
            raise LengthRequired(f"expected a Content-Length header, got {got!r}")
        n = int(length)
        if n > self.max_body_bytes:
            raise PayloadTooLarge(
                f"expected a body of at most {self.max_body_bytes} bytes, got {n}"
            )
        return n

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        self.body_length(headers)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def respond(self, send: Send, response: Response) -> None:
        """Write ``response`` (with ``Content-Length``; ``connection: close`` when asked)."""
        headers = [(b"content-length", b"%d" % len(response.body))]
        if response.body or response.content_type != "application/json":
            headers.append((b"content-type", response.content_type.encode("latin-1")))
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if response.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        _count(response.status)

    def refuse(self, exc: ServingError) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """An ASGI app answering every request with ``exc`` (e.g. over the connection cap)."""
        response = error_response(exc)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await self.respond(send, response)

        return app


def _failed(method: str, path: str, exc: StreamlearnError) -> Response:
    if exc.status >= 500:  # the server's side failed: say so in its log
        log.warning("%s %s answered %d: %s", method, path, exc.status, exc)
    return error_response(exc)


def _crashed(method: str, path: str, exc: Exception) -> Response:
    log.exception("%s %s failed", method, path)
    return error_response(ServingError(f"internal error: {type(exc).__name__}: {exc}"))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_api(
    service: PredictionService,
    sink: Sink | None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    admin_token: SecretStr | None = None,
    refresh: Callable[[str], object] | None = None,
    announce: Callable[[ModelUpdate], None] | None = None,
    features: StoredFeatures | None = None,
) -> ServingAPI:
    """The whole HTTP API over ``service``: ``/v1``, ``/v2``, admin and ``/openapi.json``.

    With ``features`` (serving's feature replica) it also answers the feature store's
    online reads, ``/v1/features`` (:mod:`streamlearn.serving.feature_api`), for the
    service's catalog.

    ``refresh(model)`` makes the server serve the model's registry serving version now
    (after an admin stage change; default: load it directly); ``announce`` publishes a
    stage change on ``model-updates``. Admin endpoints are off without ``admin_token``.
    """
    router = Router()
    router.include(v1_routes(service, sink, max_body_bytes))
    router.include(oip_routes(service, sink))
    router.include(admin_routes(service, admin_token, refresh or _loader(service), announce))
    if features is not None:
        router.include(feature_routes(features, service.catalog))
    doc = msgspec.json.encode(openapi_document(router, "streamlearn serving", server_version()))

    @router.route(
        "GET",
        "/openapi.json",
        summary="This document.",
        tag="ops",
        responses={200: None},
    )
    def openapi(req: Request) -> Response:
        return Response(200, doc)

    return ServingAPI(router, max_body_bytes)


def _loader(service: PredictionService) -> Callable[[str], object]:
    def load(model: str) -> None:
        mv = service.registry.serving_version(model)
        if mv is not None and mv.version != service.version(model):
            service.load(mv)

    return load
