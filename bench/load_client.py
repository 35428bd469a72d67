"""The HTTP load client of the serving benches: its own process, raw HTTP/1.1 on uvloop.

It keeps ``conns`` keep-alive connections and, for ``seconds`` after a ``warmup``:

* **paced** (``rate`` > 0): ``rate`` requests/s in total (request k of connection i is due
  at ``(k * conns + i) / rate`` s; a connection whose last reply is late sends at once);
  latency is from writing a request to reading its whole reply;
* **saturation** (``rate`` = 0): every connection sends back to back; the throughput is
  replies/s, the client sharing the machine's cores with the server.

Requests are pre-built wire bytes, sent in turn (request ``k * conns + i`` of the list).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import re
import time
from dataclasses import dataclass
from typing import Any

_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


def wire(path: str, body: bytes) -> bytes:
    """One POST of ``body`` (JSON) to ``path`` as HTTP/1.1 bytes."""
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


class _Conn(asyncio.Protocol):
    """One keep-alive connection: write a request, wait for one whole reply."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need: int | None = None
        self.status = 0
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end])
                self.status = int(head[9:12])
                m = _CONTENT_LENGTH.search(head)
                self.need = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = None
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))


async def _load(
    port: int,
    requests: list[bytes],
    conns: int,
    rate: float,
    seconds: float,
    warmup: float,
    out: Any,
) -> tuple[list[float], float, int, int]:
    loop = asyncio.get_running_loop()
    pool = []
    for _ in range(conns):
        _, proto = await loop.create_connection(_Conn, "127.0.0.1", port)
        pool.append(proto)
    out.put("connected")
    lat: list[float] = []
    errors = total = 0
    start = loop.time()
    measure_from = start + warmup
    end = measure_from + seconds

    async def run(i: int, conn: _Conn) -> None:
        nonlocal errors, total
        k = 0
        while True:
            if rate:
                due = start + (k * conns + i) / rate
                if due >= end:
                    return
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            elif loop.time() >= end:
                return
            conn.waiter = loop.create_future()
            t0 = time.perf_counter()
            assert conn.transport is not None
            conn.transport.write(requests[(k * conns + i) % len(requests)])
            status = await conn.waiter
            took = time.perf_counter() - t0
            total += 1
            if loop.time() >= measure_from:
                lat.append(took)
                errors += status != 200
            k += 1

    await asyncio.gather(*(run(i, c) for i, c in enumerate(pool)))
    elapsed = loop.time() - measure_from
    for c in pool:
        if c.transport is not None:
            c.transport.close()
    return lat, elapsed, errors, total


def _client(
    port: int, requests: list[bytes], conns: int, rate: float, seconds: float, out: Any
) -> None:
    import uvloop

    out.put(uvloop.run(_load(port, requests, conns, rate, seconds, 1.0, out)))


@dataclass
class Load:
    """A load phase running in its own process: :meth:`start`, then :meth:`result`."""

    port: int
    requests: list[bytes]
    conns: int
    rate: float
    seconds: float

    def start(self) -> Load:
        """Start the client process (``spawn``: the caller may run Kafka threads); return
        once its connections are open (the first request is sent right after)."""
        ctx = mp.get_context("spawn")
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_client,
            args=(self.port, self.requests, self.conns, self.rate, self.seconds, self._out),
        )
        self._proc.start()
        if self._out.get(timeout=120) != "connected":
            raise RuntimeError("the load client did not connect")
        return self

    def result(self) -> tuple[list[float], float, int, int]:
        """Latencies (s) of the measured requests (after a 1 s warm-up), the measured
        seconds, their non-200 replies, and every request sent (warm-up included)."""
        lat, elapsed, errors, total = self._out.get(timeout=self.seconds + 120)
        self._proc.join()
        return lat, elapsed, errors, total
