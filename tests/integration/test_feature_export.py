"""``streamlearn features export`` on the embedded broker: point-in-time values from the
activity topic and from the features changelog, with no leakage from the future."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from streamlearn.cli.root import app
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from tests.example import CATALOG, MODEL_NAMES

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
#: (type, ts offset, user, item), in the order produced. The late impression at +150 is
#: produced last; the click at +200 sits exactly on a row's time; +250 is after it.
EVENTS = [
    ("impression", 100.0, "u1", "i1"),
    ("impression", 120.0, "u3", "i1"),
    ("click", 200.0, "u1", "i1"),
    ("impression", 250.0, "u1", "i2"),
    ("like", 260.0, "u3", "i1"),
    ("impression", 150.0, "u1", "i2"),
]
#: Entity rows: (user_id, item_id, ts offset).
ROWS = [("u1", "i1", 200.0), ("u1", "i1", 200.5), ("u1", "i2", 1000.0), ("u2", "i1", 50.0)]


def _produce(kafka: KafkaConfig, topics: Topics) -> None:
    producer = make_producer(kafka)
    for n, (kind, ts, user, item) in enumerate(EVENTS):
        value = {
            "event_id": f"e{n}",
            "type": kind,
            "ts": T0 + ts,
            "user_id": user,
            "item_id": item,
            "surface": "feed",
            "request_id": f"r{n}",
            "context": {"category": f"cat-{n}"},
        }
        produce(producer, topics.activity, orjson.dumps(value), user)
    flush(producer)


def _export(kafka: KafkaConfig, entities: Path, out: Path, *extra: str) -> dict:
    result = CliRunner().invoke(
        app,
        [
            "features",
            "export",
            "--entities",
            str(entities),
            "--time-column",
            "ts",
            "--out",
            str(out),
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic-prefix",
            kafka.topic_prefix,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_gives_values_strictly_before_each_row_from_either_source(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    ensure_topics(kafka, topics.loop_topics(MODEL_NAMES))
    _produce(kafka, topics)
    proc = FeatureProcessor(topics, tmp_path / "state", CATALOG)
    rt = MicroBatchRuntime(proc, kafka, RuntimeConfig(group_id=f"{kafka.topic_prefix}features"))
    rt.run(max_seconds=30, max_events=len(EVENTS))
    assert rt.stats.processed == len(EVENTS)

    entities = tmp_path / "entities.csv"
    lines = [f"{u},{i},{T0 + t},{n % 2}" for n, (u, i, t) in enumerate(ROWS)]
    entities.write_text("user_id,item_id,ts,label\n" + "\n".join(lines) + "\n")

    summary = _export(kafka, entities, tmp_path / "activity.parquet")
    assert (summary["rows"], summary["source"], summary["source_records"]) == (4, "activity", 6)
    got = pq.read_table(tmp_path / "activity.parquet").to_pydict()
    assert got["label"] == [0, 1, 0, 1]  # the entity file's own columns are kept
    # u1 at +200: impressions at +100 and (produced last) +150; the click at +200 and
    # everything after are left out
    assert got["user_impressions"] == [2, 2, 3, None]
    assert got["user_engagements"] == [0, 1, 1, None]
    assert got["user_last_event_ts"] == [T0 + 150, T0 + 200, T0 + 250, None]
    assert got["user_recency_s"] == [50.0, 0.5, 750.0, None]
    # item i1 gets events from two users (partitions); at +200 the click is not counted
    assert got["item_impressions"] == [2, 2, 2, None]
    assert got["item_engagements"] == [0, 1, 0, None]
    assert got["item_category"] == ["cat-1", "cat-2", "cat-3", None]  # latest in event time

    # the changelog: what the store held, as of its records' times. A record reflects a
    # whole commit interval, so a row can see less than the exact value, never more
    changelog = _export(kafka, entities, tmp_path / "features.parquet", "--source", "features")
    assert changelog["source"] == "features" and changelog["source_records"] >= 4
    held = pq.read_table(tmp_path / "features.parquet").to_pydict()
    for name in ("user_impressions", "user_engagements", "item_impressions", "item_engagements"):
        for now, exact in zip(held[name], got[name], strict=True):
            assert now is None or (exact is not None and now <= exact), (name, held, got)
    # after every event the store holds what the event-time rebuild gives, although the
    # processor took the +150 impression after the +250 one
    for name, exact in got.items():
        if name.startswith(("user_", "item_")):
            assert held[name][2] == pytest.approx(exact[2]), name

    # a replayed dataset of the topic gives the same export without the broker's help
    replayed = tmp_path / "activity-ds"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            "-t",
            topics.activity,
            "--out",
            str(replayed),
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app,
        [
            "features",
            "export",
            "--entities",
            str(entities),
            "--out",
            str(tmp_path / "from-ds.parquet"),
            "--dataset",
            str(replayed),
        ],
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "from-ds.parquet").to_pydict() == got
