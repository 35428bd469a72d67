"""Replay on the embedded broker: determinism, bounds, malformed records."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from streamlearn.offline.dataset import read_manifest
from streamlearn.offline.ranges import Bounds, parse_bound, parse_bounds
from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration

T0_MS = 1_700_000_000_000
N = 240
BAD = 3


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "type": "click" if i % 5 == 0 else "impression",
        "ts": (T0_MS + i * 1000) / 1000,
        "user_id": f"u{i % 17}",
        "item_id": f"i{i % 11}",
        "surface": "feed",
        "request_id": f"r{i}",
        "position": i % 4,
        "context": {"country": "fr", "hour": i % 24},
    }


def _fill(kafka: KafkaConfig, topic: str) -> None:
    ensure_topics(kafka, [topic], partitions=3)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(N):
        ev = _event(i)
        p.produce(
            topic, json.dumps(ev).encode(), key=str(ev["user_id"]), timestamp=T0_MS + i * 1000
        )
    for j in range(BAD):
        p.produce(
            topic, b"{not json" if j else b'{"type": "click"}', key=b"u1", timestamp=T0_MS + j
        )
    assert p.flush(15) == 0


def test_replay_twice_gives_same_rows_and_checksum(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    _fill(kafka, topics.activity)
    spec = ReplaySpec((topics.activity,))
    m1 = replay(kafka, spec, tmp_path / "a")
    m2 = replay(kafka, spec, tmp_path / "b")
    assert m1["checksum"] == m2["checksum"]
    assert m1["records"] == N and m1["rejected"] == BAD
    assert m1["format"] == "event"
    assert [p["partition"] for p in m1["partitions"]] == [0, 1, 2]
    assert sum(p["end_offset"] - p["start_offset"] for p in m1["partitions"]) == N + BAD
    t1, t2 = (
        pq.read_table(tmp_path / "a" / "data.parquet"),
        pq.read_table(tmp_path / "b" / "data.parquet"),
    )
    assert t1.equals(t2)
    rows = t1.to_pylist()
    order = [(r["topic"], r["partition"], r["offset"]) for r in rows]
    assert order == sorted(order)
    assert {r["event_id"] for r in rows} == {f"e{i}" for i in range(N)}
    assert json.loads(rows[0]["context"])["country"] == "fr"
    rejected = (tmp_path / "a" / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == BAD
    assert {json.loads(r)["reason"] for r in rejected} == {"bad_json", "missing_field"}
    assert read_manifest(tmp_path / "a")["checksum"] == m1["checksum"]


def test_replay_by_offsets_and_timestamps(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    _fill(kafka, topics.activity)
    full = replay(kafka, ReplaySpec((topics.activity,)), tmp_path / "full")
    ends = {p["partition"]: p["end_offset"] for p in full["partitions"]}

    spec = ReplaySpec(
        (topics.activity,),
        start=parse_bounds(["1:5"], parse_bound("0")),
        end=parse_bounds(["10"], parse_bound("latest")),
    )
    part = replay(kafka, spec, tmp_path / "part")
    got = {p["partition"]: (p["start_offset"], p["end_offset"]) for p in part["partitions"]}
    assert got == {0: (0, min(10, ends[0])), 1: (5, min(10, ends[1])), 2: (0, min(10, ends[2]))}

    # Events i in [100, 150) by record timestamp (malformed ones sit at T0 + j ms).
    start, end = T0_MS + 100_000, T0_MS + 150_000
    spec = ReplaySpec(
        (topics.activity,),
        start=Bounds(parse_bound(f"@{start / 1000}")),
        end=Bounds(parse_bound(f"@{end / 1000}")),
    )
    timed = replay(kafka, spec, tmp_path / "timed")
    ids = set(pq.read_table(tmp_path / "timed" / "data.parquet")["event_id"].to_pylist())
    assert ids == {f"e{i}" for i in range(100, 150)}
    assert timed["rejected"] == 0


def test_replay_generic_json_and_training(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    topic = topics.prefix + "misc"
    ensure_topics(kafka, [topic], partitions=1)
    p = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for v in (b'{"b": 1, "a": [1, 2]}', b"42", b"oops"):
        p.produce(topic, v)
    assert p.flush(15) == 0
    m = replay(kafka, ReplaySpec((topic,)), tmp_path / "j")
    assert (m["format"], m["records"], m["rejected"]) == ("json", 2, 1)
    values = pq.read_table(tmp_path / "j" / "data.parquet")["value"].to_pylist()
    assert values == ['{"a":[1,2],"b":1}', "42"]
