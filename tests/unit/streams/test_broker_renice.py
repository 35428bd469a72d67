"""Renicing the embedded broker reaches every thread it has already started: on Linux a
niceness belongs to a thread, and the broker's runtime threads do its work."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from streamlearn.streams.kafka.broker import EmbeddedBroker

_THREADS = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("ready", flush=True)
time.sleep(30)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads' niceness: Linux")
def test_renice_reaches_every_thread_already_started() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _THREADS], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        broker = EmbeddedBroker(port=1)
        broker._proc = proc  # a process with threads stands in for the broker's
        broker.renice(7)
        time.sleep(0.05)
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) >= 4
        assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids} == {7}
    finally:
        proc.kill()
        proc.wait()
