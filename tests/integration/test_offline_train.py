"""Byte-identical retraining from a replayed training-examples topic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from streamlearn.models.registry import FileRegistry
from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.offline.train import TrainConfig, train
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration


def test_replay_then_retrain_is_byte_identical(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    topic = topics.training_examples("feed")
    ensure_topics(kafka, [topic], partitions=2)
    rng = np.random.default_rng(0)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(2000):
        item = int(rng.integers(0, 10))
        label = int(rng.random() < (0.7 if item < 3 else 0.1))
        ex = {
            "request_id": f"r{i}",
            "user_id": f"u{i % 50}",
            "item_id": f"i{item}",
            "surface": "feed",
            "ts": 1000.0 + i,
            "label": label,
            "features": {"item": f"i{item}", "hour": i % 24},
            "served_version": 1,
            "served_score": 0.2,
        }
        p.produce(topic, json.dumps(ex).encode(), key=ex["user_id"])
    assert p.flush(15) == 0

    m1 = replay(kafka, ReplaySpec((topic,)), tmp_path / "d1")
    m2 = replay(kafka, ReplaySpec((topic,)), tmp_path / "d2")
    assert m1["format"] == "training" and m1["records"] == 2000 and m1["checksum"] == m2["checksum"]

    reg = FileRegistry(tmp_path / "registry")
    cfg = TrainConfig(epochs=2, hash_bits=14, seed=7)
    a = train(tmp_path / "d1", cfg, reg, "feed")
    b = train(tmp_path / "d2", cfg, reg, "feed")
    assert a.version and b.version
    assert a.version.onnx_path.read_bytes() == b.version.onnx_path.read_bytes()
    assert a.metrics["auc"] > 0.75
    lineage = reg.get("feed", 1).metadata["lineage"]
    assert lineage["dataset"]["checksum"] == m1["checksum"]
    assert lineage["dataset"]["manifest"].endswith("manifest.json")
    assert lineage["train"]["seed"] == 7 and lineage["holdout_rows"] == 400
