"""The faust adapter runs the feature processor exactly like the micro-batch runtime."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path
from typing import cast

import orjson
import pytest
from confluent_kafka import Message

from streamlearn.streams.contracts import FeatureRecord, Scalar, decode
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from streamlearn.streams.runtime.faust_adapter import FaustRuntime
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.state.changelog import is_control_key
from tests.example import CATALOG, MODEL_NAMES
from tests.integration.reading import read_all

pytestmark = pytest.mark.integration

N = 300
BAD = [b"{not json", b'{"event_id": "x"}']
KINDS = ("impression", "impression", "click", "impression", "hide", "like")


def _events() -> list[tuple[str, bytes]]:
    """(key, value) pairs: every item belongs to one user, so its events keep one order
    through the re-keying and the decayed CTRs are comparable exactly."""
    out = []
    for i in range(N):
        user = f"u{i % 7}"
        ev = {
            "event_id": f"e{i}",
            "type": KINDS[i % len(KINDS)],
            "ts": 1_700_000_000.0 + 7.5 * i,
            "user_id": user,
            "item_id": f"i{i % 7}-{(i // 7) % 3}",
            "surface": "feed",
            "request_id": f"r{i}",
            "context": {"category": f"c{i % 3}"},
        }
        out.append((user, orjson.dumps(ev)))
    teleport = orjson.loads(out[0][1]) | {"type": "teleport"}
    return [*out, *(("u1", b) for b in BAD), ("u1", orjson.dumps(teleport))]


def _headers(m: Message) -> dict[str, str]:
    return {k: v.decode() for k, v in cast(list[tuple[str, bytes]], m.headers() or [])}


def _features(kafka: KafkaConfig, topics: Topics) -> dict[str, dict[str, Scalar]]:
    latest = {}
    for m in read_all(kafka, topics.features):
        if not is_control_key(m.key()):
            # an item's record is the partial of its partition: key by both
            key = f"{(m.key() or b'').decode()}#{m.partition()}"
            latest[key] = decode(FeatureRecord, m.value() or b"").values
    return latest


def _setup(kafka: KafkaConfig) -> Topics:
    topics = Topics(kafka.topic_prefix)
    ensure_topics(kafka, topics.loop_topics(MODEL_NAMES))
    producer = make_producer(kafka)
    for key, value in _events():
        produce(producer, topics.activity, value, key)
    flush(producer)
    return topics


def test_faust_runtime_matches_micro_batch_runtime(kafka: KafkaConfig, tmp_path: Path) -> None:
    total = N + len(BAD) + 1  # activity events + bad events
    # The same events into two topic sets, one per runtime.
    micro_kafka = dataclasses.replace(kafka, topic_prefix=kafka.topic_prefix + "micro.")
    faust_kafka = dataclasses.replace(kafka, topic_prefix=kafka.topic_prefix + "faust.")
    micro_topics, faust_topics = _setup(micro_kafka), _setup(faust_kafka)

    micro = MicroBatchRuntime(
        FeatureProcessor(micro_topics, tmp_path / "micro", CATALOG),
        micro_kafka,
        RuntimeConfig(group_id=f"{micro_kafka.topic_prefix}features"),
    )
    micro.run(max_seconds=30, max_events=total)
    assert micro.stats.consumed == total

    group = f"{faust_kafka.topic_prefix}features"
    rt = FaustRuntime(
        FeatureProcessor(faust_topics, tmp_path / "faust", CATALOG), faust_kafka, group
    )
    stats = rt.run(max_seconds=40, max_events=total)

    # every consumed event is processed or dead-lettered, none twice
    assert stats.consumed == total
    assert stats.processed == N
    assert stats.dead_lettered == len(BAD) + 1
    assert rt.skipped == 0

    dlq = read_all(faust_kafka, faust_topics.dlq(faust_topics.activity))
    assert sorted(_headers(m)["error.reason"] for m in dlq) == [
        "bad_json",
        "missing_field",
        "unknown_type",
    ]
    for m in dlq:
        h = _headers(m)
        assert h["source.topic"] == faust_topics.activity
        assert int(h["source.partition"]) == m.partition()
        assert int(h["source.offset"]) >= 0

    expected = _features(micro_kafka, micro_topics)
    got = _features(faust_kafka, faust_topics)
    assert len({k.split("#")[0] for k in expected}) == 7 + 21  # users + items
    assert got == expected

    # A worker whose faust offsets are behind the state (here: a new group, as after a
    # crash before faust committed) applies nothing twice: it skips below the stored offsets.
    again = FaustRuntime(
        FeatureProcessor(faust_topics, tmp_path / "faust", CATALOG), faust_kafka, group + ".2"
    )
    watcher = threading.Thread(target=_stop_when_skipped, args=(again, total, 30.0))
    watcher.start()
    again.run(max_seconds=40)
    watcher.join()
    assert again.skipped == total
    assert again.stats.consumed == again.stats.processed == 0
    assert _features(faust_kafka, faust_topics) == expected

    # The original group resumes where it stopped: only new events are applied.
    more = 40
    producer = make_producer(faust_kafka)
    for i in range(more):
        ev = orjson.loads(_events()[0][1]) | {"event_id": f"m{i}", "ts": 1_800_000_000.0 + i}
        produce(producer, faust_topics.activity, orjson.dumps(ev), "u0")
    flush(producer)
    resumed = FaustRuntime(
        FeatureProcessor(faust_topics, tmp_path / "faust", CATALOG), faust_kafka, group
    )
    resumed.run(max_seconds=40, max_events=more)
    assert resumed.stats.processed == resumed.stats.consumed == more
    assert resumed.stats.dead_lettered == 0
    after = _features(faust_kafka, faust_topics)
    (u0,) = [k for k in expected if k.startswith("user/u0#")]  # a user lives in one partition
    before = int(expected[u0]["user_impressions"])
    assert after[u0]["user_impressions"] == before + more

    # The state is lost while faust's committed offsets are at the end: the runtime seeks
    # faust back to the beginning and rebuilds it; faust's offsets are never trusted.
    shutil.rmtree(tmp_path / "faust")
    rebuilt = FaustRuntime(
        FeatureProcessor(faust_topics, tmp_path / "faust", CATALOG), faust_kafka, group
    )
    rebuilt.run(max_seconds=60, max_events=total + more)
    assert rebuilt.stats.consumed == total + more
    assert _features(faust_kafka, faust_topics) == after


def _stop_when_skipped(rt: FaustRuntime, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while rt.skipped < n and time.monotonic() < deadline:
        time.sleep(0.05)
    rt.stop()
