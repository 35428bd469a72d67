"""Trainer ranks: several processes learning one model, kept in step over torch.distributed.

A model's trainer can run as ``N`` ranks (``streamlearn train --ranks N``, or ``N``
processes started with ``--rank i --ranks N``). Each rank reads its own partitions of
``training-examples.<model>`` — a static assignment, partition ``p`` to rank
``p mod N`` (:func:`rank_partitions`), never a consumer group: a rank's partitions never
move while it runs, so the offsets it reports at a round are exactly what it learned,
and a rebalance can never move an example between two cuts — and learns them on its own
copy of the model. Every ``sync_interval_s`` the ranks hold a *round*
(``streamlearn.streams.learning.trainer``): their learners' deltas are summed and their
maxima taken (``streamlearn.models.sync``) so every copy is the same again, each rank's
report (its offsets, what it learned, its scores for the metrics) is gathered on rank 0,
and rank 0's decision (publish, stop) is broadcast. A snapshot is taken only at a round,
by rank 0: one model state with every rank's offsets at that round, a consistent cut.

:class:`RankGroup` is the collective, on torch.distributed's gloo backend (CPU, TCP):
rank 0 serves the rendezvous (a ``TCPStore``) on a socket it binds itself
(``address:port``, 127.0.0.1 by default), and each rank's gloo transport binds
``bind`` (its own address, 127.0.0.1 by default). gloo was chosen over Ray after
measuring both on this job (``bench/bench_ranks.py``'s note): an all-reduce of FTRL's
4.2 MB state took 7.5 ms (p50) over gloo against 36 ms through Ray actors and the object
store, Ray took 8 s to start against 0.35 s, and Ray's own CPU collectives are gloo
underneath. torch is imported only here, when ranks are asked for (the ``ranks`` extra).
Messages between ranks are msgpack (``msgspec``) with numpy arrays as raw bytes, never
pickles.

A rank that dies breaks the others' next collective at once (its connections close); a
rank that stops answering (SIGSTOP, a hung host) is found when the collective times out
after ``timeout_s``. Either way :class:`RankLost` is raised: the other ranks stop
uncommitted and are restarted (by ``train --ranks N``, ``up`` or your supervisor), and
every rank resumes from the last cut.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import numpy as np

from streamlearn.models.extras import require
from streamlearn.streams.errors import RankLost

#: msgpack extension code of a numpy array (dtype, shape, raw bytes).
_ARRAY = 1
_HEADER = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class RankConfig:
    """Where a rank stands among its model's ranks, and how they meet."""

    rank: int
    world: int
    #: rank 0's rendezvous address and port (it binds them; the others connect)
    address: str = "127.0.0.1"
    port: int = 29400
    #: the address this rank's own connections bind (gloo's transport)
    bind: str = "127.0.0.1"
    #: a rank silent for longer is lost (a round waits at most this long)
    timeout_s: float = 30.0
    #: a round is held after this many examples learned by a rank since the last one …
    sync_every: int = 4096
    #: … or this many seconds, whichever comes first
    sync_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"expected 0 <= rank < ranks, got rank {self.rank} of {self.world}")
        if self.timeout_s <= 0 or self.sync_interval_s <= 0 or self.sync_every < 1:
            raise ValueError("the rank time-out, sync interval and sync count must be > 0")

    @property
    def leader(self) -> bool:
        """Rank 0: it publishes the model and decides for all."""
        return self.rank == 0


def rank_partitions(partitions: int, rank: int, world: int) -> list[int]:
    """The partitions rank ``rank`` of ``world`` reads: ``p`` with ``p mod world == rank``."""
    if partitions < world:
        raise ValueError(
            f"expected at least as many partitions as ranks, got {partitions} partitions "
            f"for {world} ranks: a rank would have nothing to learn"
        )
    return [p for p in range(partitions) if p % world == rank]


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        header = _HEADER.encode((arr.dtype.str, list(arr.shape)))
        return msgspec.msgpack.Ext(
            _ARRAY, len(header).to_bytes(4, "little") + header + arr.tobytes()
        )
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot send a {type(obj).__name__} to another rank")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _ARRAY:
        raise ValueError(f"unknown msgpack extension {code}")
    size = int.from_bytes(data[:4], "little")
    dtype, shape = msgspec.msgpack.decode(data[4 : 4 + size])
    if np.dtype(dtype).hasobject:
        raise ValueError("arrays of objects are not sent between ranks")
    return np.frombuffer(data[4 + size :], dtype=np.dtype(dtype)).reshape(shape).copy()


def pack(obj: Any) -> bytes:
    """``obj`` (dicts, lists, numbers, strings, numpy arrays) as msgpack bytes."""
    return msgspec.msgpack.encode(obj, enc_hook=_enc_hook)


def unpack(raw: bytes) -> Any:
    """Inverse of :func:`pack` (data only: nothing is executed)."""
    return msgspec.msgpack.decode(raw, ext_hook=_ext_hook)


class RankGroup:
    """One rank's end of the collective (module docstring)."""

    def __init__(self, config: RankConfig) -> None:
        require("ranks", "training with several ranks")
        import torch
        import torch.distributed as dist

        self.config = config
        self._torch = torch
        self._dist = dist
        #: bytes this rank put into collectives (the sync's cost: ``bench/bench_ranks.py``)
        self.bytes_sent = 0
        timeout = timedelta(seconds=config.timeout_s)
        fd = None
        if config.leader:  # the rendezvous store listens where we say, not on every address
            try:
                listener = socket.create_server((config.address, config.port), backlog=64)
            except OSError as exc:
                raise RankLost(
                    f"rank 0 cannot listen on {config.address}:{config.port}: {exc}"
                ) from exc
            fd = listener.detach()  # the store owns the socket from here on
        try:
            self._store: Any = dist.TCPStore(
                config.address,
                config.port,
                config.world,
                is_master=config.leader,
                timeout=timeout,
                master_listen_fd=fd,
                use_libuv=False,
            )
            options = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
            options._timeout = timeout
            options._devices = [dist.ProcessGroupGloo.create_device(hostname=config.bind)]
            self._pg: Any = dist.ProcessGroupGloo(self._store, config.rank, config.world, options)
        except (RuntimeError, ValueError) as exc:
            self.close()
            raise RankLost(
                f"rank {config.rank} of {config.world} could not meet the others at "
                f"{config.address}:{config.port} within {config.timeout_s:g} s: {exc}"
            ) from exc

    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait()
        except RuntimeError as exc:
            raise RankLost(
                f"rank {self.config.rank} of {self.config.world}: {what} failed (a rank died "
                f"or did not answer within {self.config.timeout_s:g} s): {exc}"
            ) from exc

    def all_reduce(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        """``buf`` reduced over every rank (``op``: ``sum`` or ``max``), in place."""
        dist = self._dist
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        if buf.size:
            tensor = self._torch.from_numpy(buf)
            self._wait(self._pg.allreduce([tensor], opts), f"the all-reduce ({op})")
            self.bytes_sent += buf.nbytes
        return buf

    def all_gather(self, buf: np.ndarray) -> list[np.ndarray]:
        """Every rank's float64 ``buf`` (of any length), in rank order, on every rank."""
        sizes = np.zeros(self.config.world, dtype=np.int64)
        sizes[self.config.rank] = buf.size
        self.all_reduce(sizes)
        width = max(1, int(sizes.max()))
        mine = np.zeros(width)
        mine[: buf.size] = buf
        torch = self._torch
        out = [[torch.zeros(width, dtype=torch.float64) for _ in range(self.config.world)]]
        self._wait(self._pg.allgather(out, [torch.from_numpy(mine)]), "the all-gather")
        self.bytes_sent += width * 8
        return [t.numpy()[: int(n)] for t, n in zip(out[0], sizes, strict=True)]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0, in rank order (``None`` on the others)."""
        raw = np.frombuffer(pack(obj), dtype=np.uint8)
        sizes = np.zeros(self.config.world, dtype=np.int64)
        sizes[self.config.rank] = raw.size
        self.all_reduce(sizes)
        width = int(sizes.max())
        mine = np.zeros(width, dtype=np.uint8)
        mine[: raw.size] = raw
        torch = self._torch
        opts = self._dist.GatherOptions()
        opts.rootRank = 0
        out = (
            [[torch.zeros(width, dtype=torch.uint8) for _ in range(self.config.world)]]
            if self.config.leader
            else []
        )
        self._wait(self._pg.gather(out, [torch.from_numpy(mine)], opts), "the gather")
        self.bytes_sent += width
        if not self.config.leader:
            return None
        return [unpack(t.numpy()[: int(n)].tobytes()) for t, n in zip(out[0], sizes, strict=True)]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the others pass anything)."""
        raw = np.frombuffer(pack(obj), dtype=np.uint8) if self.config.leader else None
        size = np.array([0 if raw is None else raw.size], dtype=np.int64)
        self.all_reduce(size)
        buf = np.zeros(int(size[0]), dtype=np.uint8)
        if raw is not None:
            buf[:] = raw
        opts = self._dist.BroadcastOptions()
        opts.rootRank = 0
        self._wait(self._pg.broadcast([self._torch.from_numpy(buf)], opts), "the broadcast")
        self.bytes_sent += buf.size
        return unpack(buf.tobytes())

    def close(self) -> None:
        """Leave the group (the others' next collective fails)."""
        pg = getattr(self, "_pg", None)
        if pg is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                pg.shutdown()
            self._pg = None
        self._store = None
