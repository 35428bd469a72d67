"""The HTTP server: uvicorn (httptools parser, uvloop) in a thread, with limits.

uvicorn was chosen over granian by measurement (``bench/bench_http_servers.py``; figures in
docs/benchmarks.md: at equal p50, granian cost more CPU per request and its embedded mode is
experimental) and because its protocol class can be extended with what a production
server needs here; uvicorn itself drains in-flight requests on shutdown.
:class:`_Protocol` adds, on each connection:

* a **request time-out**: from a request's first byte until its last, at most
  ``request_timeout_s`` (a client sending one byte a second gets 408 and is closed);
* an **idle time-out** from the connection's opening, and between requests
  (``keep_alive_s``), that stray bytes cannot extend;
* a cap on the **request line and headers** (``max_header_bytes``, 431);
* a cap on **connections** (``max_connections``): a request on a connection beyond it
  gets 503 with ``Retry-After`` and the connection is closed;
* bytes the HTTP parser rejects get a JSON 400, like every other error, and a close;
* a response is **one write**: uvicorn writes the status line and headers, then the
  body, each a syscall (~20 µs on loopback here); its headers are held until its body
  comes (:class:`_OneWrite`);
* a **direct path**: a request for a plain (not coroutine) handler, such as a
  prediction, on an HTTP/1.1 connection kept alive with nothing else in flight, is
  answered from the parser's callbacks: the handler runs when the request's last byte is
  parsed and its response is written at once, without the ASGI task, event and messages
  uvicorn makes per request (~60 µs less server CPU a request here,
  ``docs/benchmarks.md``).
  Everything else (coroutine handlers, ``Expect: 100-continue``, HTTP/1.0,
  ``Connection: close``, chunked or missing bodies, pipelined requests behind one in
  flight, refusals) takes uvicorn's path, through :class:`ServingAPI` as an ASGI app.

The event loop's lag — how late a timer due every 25 ms runs — is observed in
``streamlearn_event_loop_lag_seconds``: anything that keeps the loop from serving
(a slow handler, another thread holding the GIL) shows there.

The socket is bound when :class:`HttpServer` is made, so a port in use fails at once.
:meth:`HttpServer.stop` stops accepting, lets in-flight requests finish (at most
``shutdown_timeout_s``) and closes idle connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamlearn.models.errors import StreamlearnError
from streamlearn.serving.errors import BadRequest, HeadersTooLarge, Overloaded, RequestTimeout
from streamlearn.serving.http import MAX_BODY_BYTES, ServingAPI, error_response, raw_response
from streamlearn.serving.metrics import EVENT_LOOP_LAG, HTTP_CONNECTIONS
from streamlearn.serving.routing import Request, Route

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """Time-outs and caps of the HTTP server (flags of ``streamlearn serve``).

    ``max_body_bytes`` is enforced by the app that reads bodies
    (:func:`streamlearn.serving.http.build_api` takes it); the rest by :class:`HttpServer`.
    """

    max_connections: int = 512
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = 16 * 1024
    request_timeout_s: float = 10.0
    keep_alive_s: float = 15.0
    shutdown_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"expected {name} > 0, got {value}")


class _Config(uvicorn.Config):
    """uvicorn's config, carrying the limits and the app for the protocol."""

    limits: HttpLimits
    api: ServingAPI


class _OneWrite:
    """The transport as a response cycle sees it: a response's status line and headers
    are held until its body is written, and go with it. An interim ``1xx`` response
    (``100 Continue``) goes at once; closing writes what is held first."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/") and not data.startswith(b"1", 9):
            self._held = data
        else:
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request/idle time-outs and caps (module doc)."""

    def __init__(self, config: _Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._limits = config.limits
        self._api = config.api
        self._served = self.app
        self._overloaded = config.api.refuse(
            Overloaded(
                f"expected at most {self._limits.max_connections} connections, got more: "
                "retry shortly"
            )
        )
        self._too_large = config.api.refuse(
            HeadersTooLarge(
                f"expected a request line and headers of at most "
                f"{self._limits.max_header_bytes} bytes, got more"
            )
        )
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # the deadline, and what then happens (None: nothing)
        self._on_due: Callable[[], None] | None = None
        self._head_bytes = 0
        self._in_head = False
        # A request on the direct path: its route and parts, and its body so far.
        self._direct: tuple[Route, Request] | None = None
        self._direct_body: list[bytes] = []
        self._last = False  # the server is stopping: close after this request's answer

    # -- deadlines ---------------------------------------------------------------------
    # One timer per connection, moved only when a deadline comes before it: a request
    # sets its deadline and the idle one after it by two writes each, where cancelling
    # and making a timer twice a request cost ~5 µs. The timer, when it fires, acts on
    # the deadline then set: it is past (the callback runs), later (the timer waits for
    # it) or gone (nothing to do).
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        due = self.loop.time() + delay
        self._due, self._on_due = due, callback
        if self._timer is None or self._timer.when() > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(due, self._check_due)

    def _disarm(self) -> None:
        self._on_due = None

    def _check_due(self) -> None:
        self._timer = None
        callback = self._on_due
        if callback is None:
            return
        if self.loop.time() < self._due:
            self._timer = self.loop.call_at(self._due, self._check_due)
            return
        self._on_due = None
        callback()

    def _idle_expired(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _request_expired(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            # No response is being written on this connection: answer 408, then close.
            timeout = RequestTimeout(
                f"expected the whole request within {self._limits.request_timeout_s:g} s "
                "of its first byte, got only part of it"
            )
            self.transport.write(raw_response(error_response(timeout)))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read: JSON 400 like every other error, then close."""
        bad = BadRequest(f"expected an HTTP/1.1 request, got one the parser rejects: {msg}")
        self.transport.write(raw_response(error_response(bad, close=True)))
        self.transport.close()

    # -- connection and parser callbacks ------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        HTTP_CONNECTIONS.inc()
        self._arm(self._limits.keep_alive_s, self._idle_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        HTTP_CONNECTIONS.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            self._in_head = False
            self.transport.write(
                raw_response(
                    error_response(
                        HeadersTooLarge(
                            f"expected a request line and headers of at most "
                            f"{self._limits.max_header_bytes} bytes, got more"
                        )
                    )
                )
            )
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._arm(self._limits.request_timeout_s, self._request_expired)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_bytes > self._limits.max_header_bytes:
            self.app = self._too_large
        elif len(self.connections) > self._limits.max_connections:
            self.app = self._overloaded
        else:
            self.app = self._served
            self._direct = self._direct_request()
            if self._direct is not None:
                return
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _OneWrite(self.transport)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self._direct is not None:
            self._direct_body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if self._direct is None:
            super().on_message_complete()
            return
        route, request = self._direct
        self._direct = None
        if self._direct_body:  # read only by a route that takes a body, as uvicorn's path does
            body = b"".join(self._direct_body)
            self._direct_body.clear()
            if route.request is not None:
                request = msgspec.structs.replace(request, body=body)
        response = self._api.answer(route, request)
        if self._last:
            response = msgspec.structs.replace(response, close=True)
        self.transport.write(raw_response(response))
        self.server_state.total_requests += 1
        if response.close:
            self.transport.close()
        elif not self.transport.is_closing():
            self._arm(self._limits.keep_alive_s, self._idle_expired)

    def shutdown(self) -> None:
        """Stop serving this connection: at once when idle; after the request coming in
        or in flight otherwise (its answer says ``connection: close``)."""
        if self._direct is None:
            super().shutdown()
        else:
            self._last = True

    def _direct_request(self) -> tuple[Route, Request] | None:
        """The route and request (its body to come) when this request takes the direct
        path (module doc), else ``None``."""
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return None
        parser = self.parser
        if (
            self.expect_100_continue
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return None
        url = httptools.parse_url(self.url)
        if b"%" in url.path:
            return None
        method, path = parser.get_method().decode("ascii"), url.path.decode("ascii")
        headers = dict(self.headers)
        try:
            route, params = self._api.router.match(method, path)
            if route.request is not None:
                self._api.body_length(headers)
        except StreamlearnError:  # 404, 405, 411, 413: uvicorn's path answers them
            return None
        if route.is_async:
            return None
        query = (url.query or b"").decode("latin-1")
        return route, Request(method, path, params, headers, b"", query)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive time-out; ours replaces it, and stray bytes
        # (which cancel uvicorn's) do not cancel ours.
        self._unset_keepalive_if_required()
        if not self.transport.is_closing() and not self.pipeline and not self._in_head:
            self._arm(self._limits.keep_alive_s, self._idle_expired)


#: How often the event loop's lag is sampled (each sample costs the loop ~80 µs here:
#: 0.5% of a core at this rate, 0.8% every 10 ms).
LAG_INTERVAL_S = 0.025


async def watch_lag(interval_s: float = LAG_INTERVAL_S) -> None:
    """Observe, forever, how late the running loop wakes from a sleep of ``interval_s``
    (on the clock itself: uvloop's ``loop.time()`` is the time its iteration began)."""
    observe, clock = EVENT_LOOP_LAG.observe, time.perf_counter
    while True:
        due = clock() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, clock() - due))


class _Server(uvicorn.Server):
    """uvicorn's server, watching its event loop's lag while it serves."""

    _lag: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._lag = asyncio.create_task(watch_lag())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._lag is not None:
            self._lag.cancel()
        await super().shutdown(sockets)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """``api`` served by uvicorn on ``host:port`` in a thread of its own.

    ``loop``: ``uvloop`` (the default, measured faster) or ``asyncio``.
    """

    def __init__(
        self, api: ServingAPI, host: str, port: int, limits: HttpLimits, loop: str = "uvloop"
    ) -> None:
        self.limits = limits
        self._sock = bind(host, port)
        config = _Config(
            api,
            http=_Protocol,
            loop=loop,
            interface="asgi3",
            lifespan="off",
            proxy_headers=False,
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            backlog=2048,
            timeout_keep_alive=int(max(1, limits.keep_alive_s)),
            timeout_graceful_shutdown=int(max(1, round(limits.shutdown_timeout_s))),
        )
        config.limits = limits
        config.api = api
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._sock.getsockname()[1])

    def start(self, timeout_s: float = 10.0) -> HttpServer:
        """Serve in a thread; return once connections are accepted."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start; see the log above")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop accepting, drain in-flight requests (bounded), close connections."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.limits.shutdown_timeout_s + 5.0)
            if self._thread.is_alive():
                log.error("the HTTP server did not stop within its shutdown time-out")
            self._thread = None
        self._sock.close()
