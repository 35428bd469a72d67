"""``streamlearn flow`` on the embedded broker: retrain from a topic range, then a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from confluent_kafka import Producer
from typer.testing import CliRunner

from streamlearn.cli import root as cli
from streamlearn.models.registry import FileRegistry
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def app() -> typer.Typer:
    return cli.app  # the real CLI: its error edge, its lazy commands


def produce_examples(kafka: KafkaConfig, topic: str, start: int, n: int) -> None:
    """Training examples (the joiner's shape); clicks depend on the item; partition i % 2."""
    rng = np.random.default_rng(start)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(start, start + n):
        item = int(rng.integers(0, 10))
        ex = {
            "request_id": f"r{i}",
            "user_id": f"u{i % 50}",
            "item_id": f"i{item}",
            "surface": "feed",
            "ts": 1000.0 + i,
            "label": int(rng.random() < (0.7 if item < 3 else 0.1)),
            "features": {"item": f"i{item}", "hour": i % 24},
            "served_version": 1,
            "served_score": 0.2,
        }
        p.produce(topic, json.dumps(ex).encode(), key=ex["user_id"], partition=i % 2)
    assert p.flush(15) == 0


def run(args: list[str]) -> dict:
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_retrain_flow_from_a_topic_range_then_a_sweep(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    topic = topics.training_examples("feed")
    ensure_topics(kafka, [topic], partitions=2)
    produce_examples(kafka, topic, 0, 1600)  # 800 per partition
    data = tmp_path / "var"
    common = ["--data-dir", str(data), "--bootstrap-servers", kafka.bootstrap_servers,
              "--topic-prefix", kafka.topic_prefix, "--quiet"]  # fmt: skip
    # toy features, not the feed model's: the spec is inferred from them
    args = ["flow", "run", "retrain", "-p", "model=feed", "-p", "end=600", "-p", "hash_bits=12",
            "-p", "epochs=2",
            "-p", "ftrl.alpha=0.2", "-p", "spec=infer", *common]  # fmt: skip

    first = run(args)
    assert first["status"] == "succeeded" and first["metrics"]["version"] == 1
    assert {s["status"] for s in first["steps"].values()} == {"executed"}
    assert first["metrics"]["auc"] > 0.75 and first["metrics"]["count"] == 240

    reg = FileRegistry(data / "registry")
    meta = reg.get("feed", 1).metadata
    lineage = meta["lineage"]
    assert lineage["dataset"]["records"] == 1200 and lineage["train"]["params"] == {"alpha": 0.2}
    flow = lineage["flow"]
    assert flow["run_id"] == first["run_id"] and flow["params"]["end"] == 600
    steps = flow["steps"]
    assert [steps[s]["key"] for s in ("replay", "train", "evaluate", "export")] == [
        first["steps"][s]["key"] for s in ("replay", "train", "evaluate", "export")
    ]
    assert steps["replay"]["fingerprint"]["ends"] == {topic: [600, 600]}
    assert steps["replay"]["output"]["records"] == 1200
    assert steps["train"]["inputs"] == {"replay": steps["replay"]["key"]}
    assert steps["evaluate"]["output"]["auc"] == meta["metrics"]["auc"]
    assert json.loads(Path(first["lineage"]).read_text())["status"] == "succeeded"

    produce_examples(kafka, topic, 1600, 200)  # past the closed range: still cached
    again = run(args)
    assert {s["status"] for s in again["steps"].values()} == {"cached"}
    assert [v.version for v in reg.versions("feed")] == [1]

    out = tmp_path / "sweep"
    sweep = CliRunner().invoke(
        app(),
        ["flow", "sweep", "retrain", "-p", "alpha=0.05,0.5", "-p", "epochs=1,2",
         "--set", "model=feed", "--set", "end=600", "--set", "hash_bits=12", "--set", "spec=infer",
         "--workers", "2",
         "--out", str(out),
         *common],
    )  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["alpha"], r["epochs"], r["status"]) for r in rows] == [
        ("0.05", "1", "ok"),
        ("0.05", "2", "ok"),
        ("0.5", "1", "ok"),
        ("0.5", "2", "ok"),
    ]
    assert all(0.5 < float(r["auc"]) <= 1 and float(r["examples_per_s"]) > 0 for r in rows)
    assert "| config | alpha | epochs | status | auc |" in (out / "results.md").read_text()
    png = (out / "results.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    replay_keys = {json.loads(Path(r["run"]).read_text())["steps"]["replay"]["key"] for r in rows}
    assert replay_keys == {first["steps"]["replay"]["key"]}  # the replay ran once, shared
