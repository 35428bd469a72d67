"""What a serving crash can lose of the feature log: at most its window, and whatever it
drops beyond is counted.

``streamlearn serve --feature-log-window 20`` answers requests over HTTP while its broker
(one of its own) is stopped with SIGSTOP, so no feature-log record is acknowledged: 20
stay in flight, the rest are dropped and counted, every request is answered. Then serving
is killed with SIGKILL, the broker continued, and the feature log read back by another
client (aiokafka): the answered requests missing from it, less those counted as dropped,
are at most the window. Before the pause, every answered request is in the feature log
once its records are acknowledged.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.topics import Topics
from tests.integration.truth import read
from tests.unit.serving.helpers import publish_ftrl

pytestmark = pytest.mark.integration

WINDOW = 20
PARTITIONS = 4


def _metric(text: str, name: str) -> float:
    return next(
        (float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)),
        0.0,
    )


def test_a_serving_crash_loses_at_most_the_window(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:  # paused: its own
        prefix = "fl."
        data = tmp_path / "var"
        publish_ftrl(FileRegistry(data / "registry"), "feed")
        port = free_port()
        log = (tmp_path / "serve.log").open("wb")
        serve = subprocess.Popen(
            [
                sys.executable, "-m", "streamlearn", "serve",
                "--bootstrap-servers", broker.bootstrap_servers,
                "--topic-prefix", prefix,
                "--partitions", str(PARTITIONS),
                "--data-dir", str(data),
                "--port", str(port),
                "--model", "feed",
                "--feature-log-window", str(WINDOW),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        paused = False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def call(method: str, path: str, body: object = None) -> tuple[int, bytes]:
                conn.request(method, path, body=None if body is None else json.dumps(body))
                resp = conn.getresponse()
                return resp.status, resp.read()

            deadline = time.monotonic() + 60
            while True:
                try:
                    code, body = call("GET", "/healthz")
                    if code == 200 and json.loads(body)["models"].get("feed") == 1:
                        break
                except OSError:
                    conn.close()
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "serving did not start"
                time.sleep(0.2)

            def ask(rid: str) -> None:
                req = {"request_id": rid, "user_id": "u1", "surface": "feed"}
                code, body = call("POST", "/v1/models/feed:predict", {**req, "candidates": ["i1"]})
                assert code == 200, body

            def metrics() -> str:
                return call("GET", "/metrics")[1].decode()

            def settled() -> str:
                deadline = time.monotonic() + 30
                while _metric(text := metrics(), "streamlearn_feature_log_in_flight") > 0:
                    assert time.monotonic() < deadline, "records never acknowledged"
                    time.sleep(0.1)
                return text

            healthy = [f"ok-{i}" for i in range(30)]
            for start in range(0, len(healthy), 10):  # within the window, acknowledged
                for rid in healthy[start : start + 10]:
                    ask(rid)
                text = settled()
            acked = 'streamlearn_feature_log_records_total{outcome="acknowledged"}'
            assert _metric(text, acked) == len(healthy)

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)  # nothing is acknowledged from here on
            paused = True
            blind = [f"paused-{i}" for i in range(50)]
            for rid in blind:
                ask(rid)  # answered all the same: serving never waits for the broker
            text = metrics()
            in_flight = _metric(text, "streamlearn_feature_log_in_flight")
            dropped = _metric(text, 'streamlearn_feature_log_records_total{outcome="dropped"}')
            assert _metric(text, acked) == len(healthy)
            assert (in_flight, dropped) == (WINDOW, len(blind) - WINDOW)
            serve.send_signal(signal.SIGKILL)
            serve.wait(10)
        finally:
            if paused:
                os.kill(broker.pid, signal.SIGCONT)  # type: ignore[arg-type]
            if serve.poll() is None:
                serve.kill()
                serve.wait()
            log.close()
        logged = {
            orjson.loads(r.value)["request_id"]
            for r in read(broker.bootstrap_servers, Topics(prefix).feature_log, PARTITIONS)
            if r.value is not None
        }
    assert set(healthy) <= logged
    lost = len(set(blind) - logged) - int(dropped)  # not logged, and not counted as dropped
    assert 0 <= lost <= WINDOW, (lost, sorted(logged & set(blind)))
    print(
        f"feature log: {len(blind)} answered while the broker was stopped, {int(dropped)} "
        f"dropped and counted, {lost} lost to the kill (window {WINDOW})"
    )
