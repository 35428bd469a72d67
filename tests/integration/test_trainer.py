"""The online trainer: exactly-once model updates across a SIGKILL.

A trainer process is killed mid-stream (after learning examples it has not snapshotted),
restarted, and must end with exactly the model of an uninterrupted run over the same
examples: same example count, same fingerprint of learned (topic, partition, offset),
identical weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.stack.scrape import scrape, total
from streamlearn.streams.contracts import TrainingExample, encode
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics
from streamlearn.streams.learning.trainer import (
    OnlineTrainer,
    TrainerConfig,
    example_fingerprint,
    is_resume_point,
)
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from tests.example import FEED, MODEL_NAMES
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.integration
BATCH = 128
N1, N2 = BATCH * 40, BATCH * 120


def _examples(start: int, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        u, it = int(rng.integers(50)), int(rng.integers(30))
        label = int(rng.random() < (0.3 if (u + it) % 3 == 0 else 0.05))
        ex = TrainingExample(
            request_id=f"r{i}",
            user_id=f"u{u}",
            item_id=f"i{it}",
            surface="feed",
            ts=float(i),
            label=label,
            served_version=1,
            served_score=0.5,
            features={
                "user_id": f"u{u}",
                "item_id": f"i{it}",
                "surface": "feed",
                "item_category": f"c{it % 4}",
                "user_ctr": 0.05,
                "item_ctr": 0.1,
            },
        )
        out.append(encode(ex))
    return out


def _trainer_proc(kafka: KafkaConfig, data: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        STREAMLEARN_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMLEARN_TOPIC_PREFIX=kafka.topic_prefix,
        STREAMLEARN_PARTITIONS="1",
    )
    log = open(data / f"trainer-{port}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlearn",
            "train",
            "--model",
            "feed",
            "--data-dir",
            str(data),
            "--snapshot-interval",
            "3600",
            "--batch-size",
            str(BATCH),
            "--flush-after",
            "3600",
            "--publish-interval",  # serving-only versions in between (the default)
            "1",
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_sigkilled_trainer_resumes_from_snapshot_and_learns_each_example_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    kafka = KafkaConfig(broker.bootstrap_servers, f"t{uuid.uuid4().hex[:8]}.", partitions=1)
    topics = Topics(kafka.topic_prefix)
    ensure_loop_topics(kafka, topics, MODEL_NAMES)
    topic = topics.training_examples("feed")
    producer = make_producer(kafka)

    def publish(raws: list[bytes]) -> None:
        for r in raws:
            produce(producer, topic, r, "k")
        flush(producer)

    publish(_examples(0, N1, seed=1))
    data = tmp_path / "killed"
    data.mkdir()
    registry = FileRegistry(data / "registry")
    port = free_port()
    proc = _trainer_proc(kafka, data, port)
    try:
        # a clean stop after phase 1 publishes a snapshot covering exactly N1 examples
        wait_for(
            lambda: total(scrape(port), "streamlearn_examples_trained_total") >= N1,
            60,
            "phase 1 learned",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        snap = registry.latest("feed")
        assert snap is not None and snap.metadata["examples_seen"] == N1
        assert snap.metadata["offsets"] == {f"{topic}/0": N1}

        # phase 2: learn part of it, then SIGKILL before any snapshot covers it
        proc = _trainer_proc(kafka, data, port)
        publish(_examples(N1, N2, seed=2))
        wait_for(
            lambda: total(scrape(port), "streamlearn_examples_trained_total") > 0,
            60,
            "phase 2 learning started",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # serving-only versions (every second) may hold some of it; no resume point does
        resume = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
        assert resume.metadata["examples_seen"] == N1

        # restart: resumes from the snapshot's offsets and relearns phase 2
        proc = _trainer_proc(kafka, data, port)
        wait_for(
            lambda: total(scrape(port), "streamlearn_examples_trained_total") >= N2,
            60,
            "phase 2 relearned",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = registry.latest("feed")
    assert killed is not None

    # the uninterrupted reference run, in process, over the same topic
    ref_registry = FileRegistry(tmp_path / "ref" / "registry")
    trainer = OnlineTrainer(
        topics,
        ref_registry,
        TrainerConfig(
            definition=FEED,
            batch_size=BATCH,
            flush_after_s=3600,
            snapshot_interval_s=3600,
        ),
    )
    rt = MicroBatchRuntime(
        trainer, kafka, RuntimeConfig(group_id=f"ref-{uuid.uuid4().hex}", commit_interval_s=0.0)
    )
    rt.run(max_seconds=60, max_events=N1 + N2)
    ref = ref_registry.latest("feed")
    assert ref is not None

    expected_fp = sum(example_fingerprint(topic, 0, o) for o in range(N1 + N2)) % (1 << 64)
    assert killed.metadata["examples_seen"] == ref.metadata["examples_seen"] == N1 + N2
    assert int(killed.metadata["fingerprint"]) == int(ref.metadata["fingerprint"]) == expected_fp
    assert killed.metadata["offsets"] == ref.metadata["offsets"] == {f"{topic}/0": N1 + N2}
    a = registry.load_learner(killed)
    b = ref_registry.load_learner(ref)
    rows = [
        {"user_id": f"u{u}", "item_id": f"i{i}", "item_category": f"c{i % 4}"}
        for u in range(50)
        for i in range(30)
    ]
    np.testing.assert_array_equal(a.predict_proba_many(rows), b.predict_proba_many(rows))
    assert registry.read_onnx(killed) == ref_registry.read_onnx(ref)


def test_a_failed_final_snapshot_exits_non_zero(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A clean stop whose last snapshot cannot be written is an error, not a quiet exit."""
    kafka = KafkaConfig(broker.bootstrap_servers, f"t{uuid.uuid4().hex[:8]}.", partitions=1)
    topics = Topics(kafka.topic_prefix)
    ensure_loop_topics(kafka, topics, MODEL_NAMES)
    producer = make_producer(kafka)
    for r in _examples(0, BATCH * 4, seed=3):
        produce(producer, topics.training_examples("feed"), r, "k")
    flush(producer)
    port = free_port()
    proc = _trainer_proc(kafka, tmp_path, port)
    try:
        wait_for(
            lambda: total(scrape(port), "streamlearn_examples_trained_total") >= BATCH * 4,
            60,
            "examples learned",
        )
        model_dir = tmp_path / "registry" / "feed"
        model_dir.rename(tmp_path / "moved-away")
        model_dir.write_text("not a directory")  # the registry cannot take a version now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = next(tmp_path.glob("trainer-*.log")).read_text()
    assert "Traceback" in log or "error:" in log
