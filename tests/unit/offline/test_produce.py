"""Re-publish sources and the rate limiter, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.offline.errors import DatasetError
from streamlearn.offline.produce import RateLimiter, read_records


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_rate_limiter_paces_records() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(1010):
        limiter.acquire()
    # 10 free (the burst), then 1000 at 100/s.
    assert clock.now == pytest.approx(10.0, rel=1e-6)
    unlimited = RateLimiter(0.0, clock=clock, sleep=clock.sleep)
    before = clock.now
    for _ in range(100):
        unlimited.acquire()
    assert clock.now == before


def test_read_jsonl_csv_parquet(tmp_path: Path) -> None:
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"user_id": "u1", "x": 1}\n\n{"user_id": "u2"}\n')
    assert list(read_records(jl)) == [{"user_id": "u1", "x": 1}, {"user_id": "u2"}]
    cs = tmp_path / "a.csv"
    cs.write_text("user_id,ts,position,name\nu1,1.5,3,\nu2,2,,bob\n")
    assert list(read_records(cs)) == [
        {"user_id": "u1", "ts": 1.5, "position": 3},
        {"user_id": "u2", "ts": 2, "name": "bob"},
    ]
    pf = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "v": [1.0]}), pf)
    assert list(read_records(pf)) == [{"user_id": "u1", "v": 1.0}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1]\n")
    with pytest.raises(DatasetError, match="JSON object"):
        list(read_records(bad))
    with pytest.raises(DatasetError, match="found nothing"):
        read_records(tmp_path / "missing.csv")


def test_replayed_dataset_records_drop_source_columns(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    table = pa.table(
        {
            "topic": ["t"],
            "partition": [0],
            "offset": [5],
            "timestamp": [None],
            "key": ["u1"],
            "user_id": ["u1"],
            "position": [None],
            "context": ['{"a":1}'],
        }
    )
    pq.write_table(table, d / "data.parquet")
    (d / "manifest.json").write_text(json.dumps({"checksum": "x", "format": "event"}))
    assert list(read_records(d)) == [{"user_id": "u1", "context": {"a": 1}}]
