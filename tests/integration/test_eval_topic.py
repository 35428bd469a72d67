"""``streamlearn eval --topic``: replay a training-examples range from the embedded broker
and evaluate it prequentially."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from streamlearn.cli.root import app
from streamlearn.streams.contracts import TrainingExample, encode
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration

N = 2000
T0 = 1_700_000_000.0


def _fill(kafka: KafkaConfig, topic: str) -> None:
    """``N`` examples whose label depends on the item and the position."""
    ensure_topics(kafka, [topic], partitions=3)
    rng = np.random.default_rng(7)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(N):
        item, position = int(rng.integers(0, 20)), int(rng.integers(0, 5))
        logit = -1.0 + (2.0 if item < 5 else -1.0) - 0.4 * position
        user = f"u{rng.integers(0, 50)}"
        ex = TrainingExample(
            request_id=f"r{i}",
            user_id=user,
            item_id=f"i{item}",
            surface="feed",
            ts=T0 + i // 4,  # ties: the replay breaks them by partition and offset
            label=int(rng.random() < 1 / (1 + np.exp(-logit))),
            features={"item": f"i{item}", "user": user, "position": position},
            served_version=1,
            served_score=0.5,
        )
        p.produce(topic, encode(ex), key=user, timestamp=int(ex.ts * 1000))
    assert p.flush(15) == 0


def _eval(kafka: KafkaConfig, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--quiet",
            "--model",
            "ftrl",
            *args,
        ],
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.output


def test_eval_on_a_topic_range(kafka: KafkaConfig, topics: Topics, tmp_path: Path) -> None:
    topic = topics.training_examples("feed")
    _fill(kafka, topic)
    out = tmp_path / "summary.json"
    code, output = _eval(kafka, "--topic", topic, "--hash-bits", "14", "--summary-json", str(out))
    assert code == 0, output
    summary = json.loads(out.read_text())
    assert summary["examples"] == N
    assert summary["auc"] > 0.6
    assert summary["examples_per_s"] > 0
    assert (summary["label"], summary["time_column"]) == ("label", "ts")
    assert summary["feature_spec"]["categorical"] == ["item", "user"]
    assert summary["feature_spec"]["numeric"] == ["position"]
    assert summary["replay"]["records"] == N and summary["replay"]["format"] == "training"

    # the same range again, by explicit offsets: the same stream, the same metrics
    ends = [f"{p['partition']}:{p['end_offset']}" for p in summary["replay"]["partitions"]]
    again = tmp_path / "again.json"
    args = ["--topic", topic, "--from", "earliest", *[a for e in ends for a in ("--to", e)]]
    code, output = _eval(kafka, *args, "--hash-bits", "14", "--summary-json", str(again))
    assert code == 0, output
    second = json.loads(again.read_text())
    assert second["replay"]["checksum"] == summary["replay"]["checksum"]
    assert (second["auc"], second["logloss"]) == (summary["auc"], summary["logloss"])

    # a range with no records, and --data with --topic, are clear errors
    code, output = _eval(kafka, "--topic", topic, "--from", "5", "--to", "5")
    assert code == 2 and "got none" in output
    code, output = _eval(kafka, "--topic", topic, "--data", str(out))
    assert code == 2 and "exactly one of --data FILE or --topic TOPIC" in output
