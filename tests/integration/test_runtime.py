"""The micro-batch runtime with the feature processor on the embedded broker."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson
import pytest

from streamlearn.streams.contracts import FeatureRecord, decode
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.features.store import merge_partials
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.state.changelog import is_control_key
from tests.example import CATALOG, MODEL_NAMES
from tests.integration.reading import read_all

pytestmark = pytest.mark.integration


def _event(i: int, user: str, item: str, kind: str = "impression") -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{i}",
            "type": kind,
            "ts": 1_700_000_000.0 + i,
            "user_id": user,
            "item_id": item,
            "surface": "feed",
            "request_id": f"r{i}",
            "position": 0,
            "context": {"category": "c1"},
        }
    )


def _latest_features(kafka: KafkaConfig, topics: Topics) -> dict[str, dict]:
    """Current features per entity from the features topic, item partials merged."""
    latest: dict[tuple[str, int], FeatureRecord] = {}
    for m in read_all(kafka, topics.features):
        if not is_control_key(m.key()):
            latest[(m.key().decode(), m.partition())] = decode(FeatureRecord, m.value())
    out: dict[str, dict] = {}
    items: dict[str, list] = {}
    for (key, _), rec in latest.items():
        if key.startswith("item/"):
            items.setdefault(key, []).append(rec.values)
        else:
            out[key] = rec.values
    out.update((k, merge_partials("item", v, CATALOG)) for k, v in items.items())
    return out


def test_features_processed_bad_events_dead_lettered_restart_resumes(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    ensure_topics(kafka, topics.loop_topics(MODEL_NAMES))
    producer = make_producer(kafka)
    n = 400
    for i in range(n):
        produce(producer, topics.activity, _event(i, f"u{i % 7}", f"i{i % 5}"), f"u{i % 7}")
    bad = [b"{not json", b'{"event_id": "x"}', _event(9999, "u1", "i1", kind="teleport")]
    for raw in bad:
        produce(producer, topics.activity, raw, "u1")
    flush(producer)

    def run_once(max_s: float) -> MicroBatchRuntime:
        proc = FeatureProcessor(topics, tmp_path / "state", CATALOG)
        rt = MicroBatchRuntime(proc, kafka, RuntimeConfig(group_id=f"{kafka.topic_prefix}feat"))
        t = threading.Thread(target=rt.run, kwargs={"max_seconds": max_s})
        t.start()
        t.join()
        return rt

    rt = run_once(8.0)
    # every activity event is processed or dead-lettered
    assert rt.stats.dead_lettered == len(bad)
    assert rt.stats.processed == n

    dlq = read_all(kafka, topics.dlq(topics.activity))
    assert len(dlq) == len(bad)
    reasons = sorted(dict(m.headers())["error.reason"].decode() for m in dlq)
    assert reasons == ["bad_json", "missing_field", "unknown_type"]
    for m in dlq:
        h = dict(m.headers())
        assert h["source.topic"].decode() == topics.activity
        assert int(h["source.offset"]) >= 0

    latest = _latest_features(kafka, topics)
    assert latest["user/u3"]["user_impressions"] == sum(1 for i in range(n) if i % 7 == 3)
    assert latest["item/i2"]["item_impressions"] == n // 5  # merged over partitions
    assert latest["item/i2"]["item_category"] == "c1"

    # a restart resumes from the offsets stored with the state: nothing is re-counted
    more = 50
    for i in range(n, n + more):
        produce(producer, topics.activity, _event(i, "u3", "i2"), "u3")
    flush(producer)
    rt2 = run_once(8.0)
    assert rt2.stats.processed == more
    latest = _latest_features(kafka, topics)
    assert latest["user/u3"]["user_impressions"] == sum(1 for i in range(n) if i % 7 == 3) + more
    assert latest["item/i2"]["item_impressions"] == n // 5 + more


class _Poisoned(FeatureProcessor):
    """Raises on one event, as a bug in a batch function would."""

    def process(self, records: list) -> list:  # type: ignore[override]
        if any(r.value.event_id == "poison" for r in records):
            # mutate state first, as a real failure halfway through a batch would
            super().process(records)
            raise RuntimeError("boom")
        return super().process(records)


def test_failed_batch_rewinds_the_uncommitted_interval_and_dead_letters_only_the_culprit(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_topics(kafka, topics.loop_topics(MODEL_NAMES))
    producer = make_producer(kafka)
    n = 600
    for i in range(n):
        raw = _event(i, "u1", "i1")
        if i == 450:
            raw = orjson.dumps({**orjson.loads(raw), "event_id": "poison"})
        produce(producer, topics.activity, raw, "u1")
    flush(producer)
    proc = _Poisoned(topics, tmp_path / "state", CATALOG)
    rt = MicroBatchRuntime(
        proc,
        kafka,
        RuntimeConfig(
            group_id=f"{kafka.topic_prefix}poison", batch_size=100, commit_interval_s=30.0
        ),
    )
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.runtime.applier"):
        rt.run(max_seconds=15)
    assert any("rewinding" in r.message for r in caplog.records)  # the path under test
    assert rt.stats.dead_lettered == 1
    assert rt.stats.processed == n - 1
    dlq = read_all(kafka, topics.dlq(topics.activity))
    assert [dict(m.headers())["error.reason"] for m in dlq] == [b"processing_error"]
    latest = _latest_features(kafka, topics)
    # every event but the poison counted exactly once, despite the rewind
    assert latest["user/u1"]["user_impressions"] == n - 1
    assert latest["item/i1"]["item_impressions"] == n - 1
