"""The feature processor as a real process: kill -9 under load, and a new cluster in the
same data directory. The truth is read back from the topics by aiokafka (``truth``).

Before stored offsets were the only source of truth, a killed processor resumed at the
group's committed offset, ahead of its rolled-back state (counts lost); and against a new
cluster it trusted the old cluster's offsets (nothing processed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics
from tests.example import MODEL_NAMES
from tests.integration.truth import Truth, check_features

pytestmark = pytest.mark.integration
PARTITIONS = 4
BAD = (b"{not json", b'{"event_id": "x"}', b'{"type": "impression", "ts": "soon"}')


def _worker(bootstrap: str, prefix: str, data: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        STREAMLEARN_BOOTSTRAP_SERVERS=bootstrap,
        STREAMLEARN_TOPIC_PREFIX=prefix,
        STREAMLEARN_PARTITIONS=str(PARTITIONS),
        STREAMLEARN_DATA_DIR=str(data),
    )
    log = open(data / "features.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "streamlearn", "worker", "features"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _produce(
    kafka: KafkaConfig,
    topics: Topics,
    n: int,
    rate: float,
    seed: int,
    stop: threading.Event | None = None,
) -> tuple[int, int]:
    """Up to ``n`` events (1 in 50 malformed) at about ``rate``/s, until ``stop``;
    return (records produced, malformed ones)."""
    rng = random.Random(seed)
    producer = make_producer(kafka)
    bad = 0
    t0 = time.monotonic()
    i = 0
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        user = f"u{rng.randrange(300)}"
        if i % 50 == 7:
            produce(producer, topics.activity, BAD[bad % len(BAD)], user)
            bad += 1
        else:
            ev = {
                "event_id": f"e{seed}-{i}",
                "type": rng.choice(("impression", "impression", "impression", "click", "hide")),
                "ts": 1_700_000_000.0 + i * 0.01,
                "user_id": user,
                "item_id": f"i{rng.randrange(80)}",
                "surface": "feed",
                "request_id": f"r{i}",
            }
            produce(producer, topics.activity, orjson.dumps(ev), user)
        if i % 500 == 0:
            producer.poll(0)
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    else:
        i = n
    flush(producer)
    return i, bad


def _settle(bootstrap: str, topics: Topics, timeout_s: float) -> Truth:
    """Wait until the topics agree (the processor caught up), or return the last view."""
    deadline = time.monotonic() + timeout_s
    truth = check_features(bootstrap, topics, PARTITIONS)
    while not truth.ok() and time.monotonic() < deadline:
        time.sleep(2)
        truth = check_features(bootstrap, topics, PARTITIONS)
    return truth


def _wait_assigned(data: Path, incarnation: int, timeout_s: float = 60.0) -> None:
    """Until the ``incarnation``-th worker logged its assignment (it is processing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = (data / "features.log").read_text(errors="replace")
        if log.count("processor=features assigned") >= incarnation:
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {incarnation} was not assigned within {timeout_s}s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_kill_9_under_load_loses_nothing(broker: EmbeddedBroker, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaConfig(broker.bootstrap_servers, prefix, PARTITIONS)
    topics = Topics(prefix)
    ensure_loop_topics(kafka, topics, MODEL_NAMES)
    kills = 3
    done = threading.Event()
    counts: list[tuple[int, int]] = []
    load = threading.Thread(
        target=lambda: counts.append(_produce(kafka, topics, 200_000, 800.0, 1, done))
    )
    proc = _worker(broker.bootstrap_servers, prefix, tmp_path)
    load.start()
    rng = random.Random(7)
    try:
        for k in range(1, kills + 1):
            _wait_assigned(tmp_path, k)
            time.sleep(rng.uniform(1.5, 3.0))  # killed while it processes the load
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = _worker(broker.bootstrap_servers, prefix, tmp_path)
        _wait_assigned(tmp_path, kills + 1)
        time.sleep(1.0)
        done.set()
        load.join(30)
        truth = _settle(broker.bootstrap_servers, topics, 60)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert truth.ok(), truth.summary()
    n, bad = counts[0]
    assert truth.events == n - bad and len(truth.malformed) == bad > 0
    assert truth.users_checked == 300


def test_a_new_cluster_in_the_same_directory_processes_everything(tmp_path: Path) -> None:
    prefix = "streamlearn."
    topics = Topics(prefix)
    truths = []
    for seed in (1, 2):  # cluster A, then cluster B, one data directory
        with EmbeddedBroker() as b:
            kafka = KafkaConfig(b.bootstrap_servers, prefix, PARTITIONS)
            ensure_loop_topics(kafka, topics, MODEL_NAMES)
            n = 3_000 if seed == 1 else 2_000  # B has fewer records than A's offsets
            _, n_bad = _produce(kafka, topics, n, 50_000.0, seed)
            proc = _worker(b.bootstrap_servers, prefix, tmp_path)
            try:
                truth = _settle(b.bootstrap_servers, topics, 60)
                assert _stop(proc) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert truth.ok(), f"cluster {seed}: {truth.summary()}"
            assert truth.events == n - n_bad and len(truth.dead_lettered) == n_bad
            truths.append(truth)
    log = (tmp_path / "features.log").read_text()
    assert log.count("stale state") == PARTITIONS, "one line per store rebuilt for cluster B"
