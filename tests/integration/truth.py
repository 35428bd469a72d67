"""The truth, read back from the topics by an outside client (aiokafka, not our
confluent-kafka code): per-user and per-item counts from ``activity`` against the newest
``features`` records, and every malformed event against ``activity.dlq``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamlearn.streams.errors import ContractError
from streamlearn.streams.features.store import merge_partials
from streamlearn.streams.kafka.topics import Topics
from tests.example import CATALOG, ENGAGEMENT_TYPES, MODEL_NAMES, decode_event


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def _read(bootstrap: str, topic: str, partitions: int, idle_s: float) -> list[Rec]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Rec] = []
        last = time.monotonic()
        deadline = last + 120
        while time.monotonic() - last < idle_s and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(Rec(tp.partition, m.offset, m.key, m.value, dict(m.headers or ())))
                last = time.monotonic()
        return out
    finally:
        await consumer.stop()


def read(bootstrap: str, topic: str, partitions: int, idle_s: float = 3.0) -> list[Rec]:
    """Every record of ``topic`` until ``idle_s`` pass without one (aiokafka)."""
    return asyncio.run(_read(bootstrap, topic, partitions, idle_s))


@dataclass
class Truth:
    """What the topics say, and where they disagree."""

    events: int = 0
    malformed: set[tuple[int, int]] = field(default_factory=set)
    dead_lettered: Counter[tuple[int, int]] = field(default_factory=Counter)
    users_checked: int = 0
    items_checked: int = 0
    wrong: list[str] = field(default_factory=list)

    @property
    def duplicate_dead_letters(self) -> int:
        return sum(n - 1 for n in self.dead_lettered.values() if n > 1)

    def ok(self) -> bool:
        return not self.wrong

    def summary(self) -> str:
        return (
            f"{self.events} events, {len(self.malformed)} malformed, "
            f"{sum(self.dead_lettered.values())} dead letters "
            f"({self.duplicate_dead_letters} duplicates), {self.users_checked} users and "
            f"{self.items_checked} items checked; {len(self.wrong)} wrong: {self.wrong[:5]}"
        )


def check_features(bootstrap: str, topics: Topics, partitions: int) -> Truth:
    """Counts per user and item in ``features`` against ``activity``; dead letters."""
    truth = Truth()
    users: dict[str, Counter[str]] = {}
    items: dict[str, Counter[str]] = {}
    for r in read(bootstrap, topics.activity, partitions):
        try:
            ev = decode_event(r.value)
        except ContractError:
            truth.malformed.add((r.partition, r.offset))
            continue
        truth.events += 1
        kind = "engagements" if ev.type in ENGAGEMENT_TYPES else ev.type + "s"
        users.setdefault(ev.user_id, Counter())[kind] += 1
        items.setdefault(ev.item_id, Counter())[kind] += 1
    for r in read(bootstrap, topics.dlq(topics.activity), partitions):
        assert r.headers["source.topic"].decode() == topics.activity
        coord = (int(r.headers["source.partition"]), int(r.headers["source.offset"]))
        truth.dead_lettered[coord] += 1
    for coord in sorted(truth.malformed - set(truth.dead_lettered)):
        truth.wrong.append(
            f"malformed event at partition={coord[0]} offset={coord[1]} not dead-lettered"
        )
    for coord in sorted(set(truth.dead_lettered) - truth.malformed):
        truth.wrong.append(f"dead letter for partition={coord[0]} offset={coord[1]}, not malformed")
    latest: dict[tuple[bytes, int], bytes] = {}
    for r in read(bootstrap, topics.features, partitions):
        if r.key and not r.key.startswith(b"__") and r.value is not None:
            latest[(r.key, r.partition)] = r.value
    user_values: dict[str, dict] = {}
    item_partials: dict[str, list[dict]] = {}
    for (key, _), raw in latest.items():
        rec = orjson.loads(raw)
        if key.startswith(b"user/"):
            user_values[key[5:].decode()] = rec["values"]
        else:
            item_partials.setdefault(key[5:].decode(), []).append(rec["values"])
    for user, c in users.items():
        v = user_values.get(user)
        want = (c["impressions"], c["engagements"], c["hides"])
        got = None if v is None else (v["user_impressions"], v["user_engagements"], v["user_hides"])
        if got != want:
            truth.wrong.append(f"user {user}: features say {got}, activity says {want}")
        truth.users_checked += 1
    for item, c in items.items():
        merged = merge_partials("item", item_partials.get(item, []), CATALOG)
        got = (merged["item_impressions"], merged["item_engagements"])
        if got != (c["impressions"], c["engagements"]):
            truth.wrong.append(
                f"item {item}: features say {got}, activity says {tuple(c.values())}"
            )
        truth.items_checked += 1
    return truth


@dataclass(frozen=True)
class FeatureLogGaps:
    """Requests whose items were shown (impressions in ``activity``) against the requests
    serving feature-logged: a shown request without its record never becomes examples."""

    shown: int
    not_logged: int


def feature_log_gaps(bootstrap: str, topics: Topics, partitions: int) -> FeatureLogGaps:
    """Requests with impressions, and those of them with no ``feature-log`` record."""
    shown: set[str] = set()
    for r in read(bootstrap, topics.activity, partitions):
        try:
            ev = decode_event(r.value)
        except ContractError:
            continue
        if ev.type == "impression":
            shown.add(ev.request_id)
    logged = {
        orjson.loads(r.value)["request_id"]
        for r in read(bootstrap, topics.feature_log, partitions)
        if r.value is not None
    }
    return FeatureLogGaps(len(shown), len(shown - logged))


def latest_features(bootstrap: str, topics: Topics, partitions: int) -> dict[str, dict]:
    """Each entity's newest values in ``features`` (item partials merged)."""
    latest: dict[tuple[bytes, int], bytes] = {}
    for r in read(bootstrap, topics.features, partitions):
        if r.key and not r.key.startswith(b"__") and r.value is not None:
            latest[(r.key, r.partition)] = r.value
    return _merged(latest)


def _merged(latest: dict[tuple[bytes, int], bytes]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    items: dict[str, list[dict]] = {}
    for (key, _), raw in latest.items():
        values = orjson.loads(raw)["values"]
        if key.startswith(b"item/"):
            items.setdefault(key.decode(), []).append(values)
        else:
            out[key.decode()] = values
    out.update((k, merge_partials("item", v, CATALOG)) for k, v in items.items())
    return out


def single_worker_features(bootstrap: str, topics: Topics, partitions: int) -> dict[str, dict]:
    """What one uninterrupted feature processor makes of ``activity``: the activity
    records read back (aiokafka), run through ``FeatureProcessor`` on the in-memory
    broker, in their partitions and order."""
    import tempfile
    from pathlib import Path

    from streamlearn.streams.features.processor import FeatureProcessor
    from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
    from streamlearn.streams.testing.memory import MemoryBroker

    broker = MemoryBroker(partitions)
    broker.create_topics(topics.loop_topics(MODEL_NAMES))
    for r in sorted(
        read(bootstrap, topics.activity, partitions), key=lambda r: (r.partition, r.offset)
    ):
        broker.append(topics.activity, r.value, r.key, r.partition)
    with tempfile.TemporaryDirectory() as d:
        proc = FeatureProcessor(topics, Path(d), CATALOG, cluster=broker)
        MicroBatchRuntime(proc, broker, RuntimeConfig("reference", commit_interval_s=0)).run(
            idle_polls=3
        )
    latest = {
        (k, p): v
        for (k, p), v in broker.latest(topics.features).items()
        if k and not k.startswith(b"__") and v is not None
    }
    return _merged(latest)


def diff_features(got: dict[str, dict], want: dict[str, dict], rel: float = 1e-9) -> list[str]:
    """Entities whose values differ (floats within ``rel``)."""
    wrong = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        if a is None or b is None or set(a) != set(b):
            wrong.append(f"{key}: {a} != {b}")
            continue
        for name, va in a.items():
            vb = b[name]
            if isinstance(va, float) or isinstance(vb, float):
                if abs(float(va) - float(vb)) > rel * max(1.0, abs(float(vb))):
                    wrong.append(f"{key}.{name}: {va} != {vb}")
            elif va != vb:
                wrong.append(f"{key}.{name}: {va} != {vb}")
    return wrong
