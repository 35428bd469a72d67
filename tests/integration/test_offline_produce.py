"""Re-publish round trip on the embedded broker: replay → produce → replay."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streamlearn.offline.produce import produce_file
from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from tests.integration.test_offline_replay import N, _fill

pytestmark = pytest.mark.integration

DECODED = [
    "event_id",
    "type",
    "ts",
    "user_id",
    "item_id",
    "surface",
    "request_id",
    "position",
    "context",
]


def test_republish_round_trip(kafka: KafkaConfig, topics: Topics, tmp_path: Path) -> None:
    _fill(kafka, topics.activity)
    replay(kafka, ReplaySpec((topics.activity,)), tmp_path / "src")
    target = topics.prefix + "backfill.activity"
    result = produce_file(kafka, tmp_path / "src", target, rate=800.0)
    assert result.records == N and result.unkeyed == 0
    assert result.seconds >= (N - 80) / 800  # paced (after the initial burst)
    m = replay(kafka, ReplaySpec((target,)), tmp_path / "dst")
    assert (m["records"], m["rejected"]) == (N, 0)

    def rows(d: str) -> list[dict[str, object]]:
        return sorted(
            pq.read_table(tmp_path / d / "data.parquet", columns=DECODED).to_pylist(),
            key=lambda r: str(r["event_id"]),
        )

    assert rows("src") == rows("dst")
    keyed = pq.read_table(tmp_path / "dst" / "data.parquet", columns=["key", "user_id"])
    assert keyed["key"].to_pylist() == keyed["user_id"].to_pylist()
