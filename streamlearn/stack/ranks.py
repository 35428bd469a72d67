"""``streamlearn train --ranks N``: one model's trainer ranks as child processes.

The launcher starts ``N`` copies of its own command, each told its rank
(``STREAMLEARN_RANK``), the rendezvous (``STREAMLEARN_RENDEZVOUS``: rank 0's address and
a free port, fresh for every generation) and its metrics port (rank 0 the one given:
its progressive metrics are the model's; the others a free one). The ranks meet, learn
and publish as one trainer (``streamlearn.streams.learning.ranks``).

They live and die together. When a rank exits with an error — killed, or it found
another rank gone (a lost rank breaks the others' next round at once; a silent one
after the rank time-out) — the launcher kills the rest (SIGKILL: nothing they hold
after the last round is worth keeping) and starts every rank again after a pause; each
resumes from the last snapshot, the last consistent cut. A clean stop (SIGTERM or SIGINT
to the launcher, or ``--duration``) reaches every rank; they agree on a last round, rank
0 publishes a last snapshot, and the launcher exits 0 once all have. Children die with
the launcher (``prctl``), so a killed launcher leaves no ranks behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from streamlearn.streams.kafka.broker import die_with_parent, free_port

log = logging.getLogger(__name__)


class RankLauncher:
    """Runs ``world`` ranks of ``argv`` (module docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        world: int,
        host: str = "127.0.0.1",
        port: int | None = None,
        metrics_port: int = 0,
        pause_s: float = 1.0,
    ) -> None:
        if world < 2:
            raise ValueError(f"a launcher runs 2 ranks or more, got {world}")
        # what differs per rank comes through the environment, so the flags must not say
        self.argv = _without(argv, ("--rank", "--rendezvous", "--metrics-port"))
        self.world = world
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.pause_s = pause_s
        #: generations started (1 + restarts)
        self.generations = 0
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen[bytes]] = []

    def stop(self) -> None:
        """Stop every rank cleanly (they agree on a last round) and return from ``run``."""
        self._stop.set()

    def _start(self) -> None:
        port = self.port or free_port(self.host)
        self.generations += 1
        self._procs = []
        for rank in range(self.world):
            env = dict(
                os.environ,
                STREAMLEARN_RANK=str(rank),
                STREAMLEARN_RANKS=str(self.world),
                STREAMLEARN_RENDEZVOUS=f"{self.host}:{port}",
            )
            if self.metrics_port:  # rank 0 on the port given, the others on free ones
                port_of = self.metrics_port if rank == 0 else free_port()
                env["STREAMLEARN_METRICS_PORT"] = str(port_of)
            self._procs.append(subprocess.Popen(self.argv, env=env, preexec_fn=die_with_parent))
        log.info(
            "started %d ranks (generation %d, rendezvous %s:%d): pids %s",
            self.world,
            self.generations,
            self.host,
            port,
            [p.pid for p in self._procs],
        )

    def _kill_all(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
        for p in self._procs:
            p.wait()

    def run(self) -> int:
        """Run the ranks until they all stop cleanly (0), restarting them together after
        any failure; the exit code of a clean stop that a rank failed (1) otherwise."""
        self._start()
        stopping = False
        while True:
            time.sleep(0.2)
            if self._stop.is_set() and not stopping:
                stopping = True
                for p in self._procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            codes = [p.poll() for p in self._procs]
            # a rank stopped by our SIGTERM before it could catch it (still starting) is clean
            ok = (None, 0, -signal.SIGTERM) if stopping else (None, 0)
            failed = [(r, c) for r, c in enumerate(codes) if c not in ok]
            if failed:
                self._kill_all()
                if stopping:
                    log.error("rank(s) %s failed while stopping", failed)
                    return 1
                log.warning(
                    "rank(s) %s exited with an error: restarting all %d ranks from the last "
                    "snapshot in %.1f s",
                    failed,
                    self.world,
                    self.pause_s,
                )
                if self._stop.wait(self.pause_s):
                    return 0
                self._start()
                continue
            if all(c in ok and c is not None for c in codes):
                log.info("every rank stopped cleanly")
                return 0


def _without(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``argv`` less ``flags`` and their values (``--flag value`` or ``--flag=value``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out
