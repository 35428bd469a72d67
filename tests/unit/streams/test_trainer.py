"""The online trainer without a broker: atomic batches, bad labels, lineages, resume points."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import numpy as np
import pytest

from streamlearn.models.errors import RegistryError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry
from streamlearn.streams.contracts import TrainingExample, encode
from streamlearn.streams.errors import CatalogError, StateLost
from streamlearn.streams.learning.trainer import (
    OnlineTrainer,
    TrainerConfig,
    example_fingerprint,
    fingerprint_sum,
    is_online,
)
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.runtime.processor import Record, RecordBatch
from streamlearn.streams.testing.memory import MemoryBroker
from tests.example import FEED, MODEL_NAMES
from tests.unit.streams.scenarios import PROBES, SPEC, TOPICS, dead_letters

TOPIC = TOPICS.training_examples("feed")
BS = 8


def _example(i: int, label: int = 0) -> TrainingExample:
    return TrainingExample(
        request_id=f"r{i}",
        user_id=f"u{i % 5}",
        item_id=f"i{i % 3}",
        surface="feed",
        ts=float(i),
        label=label,
        features={"user_id": f"u{i % 5}", "item_id": f"i{i % 3}", "n": float(i % 4)},
        served_version=1,
        served_score=0.5,
    )


def _records(start: int, n: int) -> list[Record]:
    return [Record(TOPIC, 0, i, b"k", _example(i, label=i % 2)) for i in range(start, start + n)]


def _trainer(root: Path, cluster: MemoryBroker | None = None, **kw: object) -> OnlineTrainer:
    cfg = TrainerConfig(
        definition=FEED.with_spec(SPEC), batch_size=BS, flush_after_s=1e9, snapshot_interval_s=1e9
    )
    for k, v in kw.items():
        cfg = TrainerConfig(**{**cfg.__dict__, k: v})
    return OnlineTrainer(TOPICS, FileRegistry(root / "registry"), cfg, cluster=cluster)


def test_a_batch_that_fails_half_way_learns_nothing(tmp_path: Path) -> None:
    """A later chunk raising used to leave the earlier chunks learned and the rest
    dropped; the whole batch is featurised before anything is learned."""
    t = _trainer(tmp_path)
    t.assign([(TOPIC, 0)])
    t.process(_records(0, 3))  # pending, carried into the next batch
    assert t.learner is not None
    before = t.learner.predict_proba_many(PROBES)
    real = t.learner.featuriser.transform_lists

    def poisoned(n, columns):  # type: ignore[no-untyped-def]
        if "i0" in columns["item_id"][27:]:  # example 30, in the 4th chunk of 8
            raise ValueError("cannot featurise")
        return real(n, columns)

    t.learner.featuriser.transform_lists = poisoned  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        t.process(_records(3, 30))  # 33 examples: 4 chunks of 8 would be due
    assert t.examples_seen == 0
    assert t._pending_n == 3  # the earlier batch's examples are still there
    np.testing.assert_array_equal(t.learner.predict_proba_many(PROBES), before)


def test_the_runtime_retries_a_failed_batch_and_learns_each_example_once(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    for r in _records(0, 40):
        broker.append(TOPIC, encode(r.value), b"k")
    t = _trainer(tmp_path, broker)
    t._load()
    assert t.learner is not None
    real = t.learner.featuriser.transform_lists

    def fails_once_on_many(n, columns):  # type: ignore[no-untyped-def]
        if n > 1 and not getattr(fails_once_on_many, "done", False):
            fails_once_on_many.done = True  # type: ignore[attr-defined]
            raise RuntimeError("transient")
        return real(n, columns)

    t.learner.featuriser.transform_lists = fails_once_on_many  # type: ignore[method-assign]
    MicroBatchRuntime(t, broker, RuntimeConfig("g", batch_size=16, commit_interval_s=0)).run(
        idle_polls=3
    )
    mv = FileRegistry(tmp_path / "registry").latest("feed")
    assert mv is not None
    assert mv.metadata["examples_seen"] == 40
    assert mv.metadata["offsets"] == {f"{TOPIC}/0": 40}


def test_label_2_is_a_contract_error_dead_lettered_never_learned(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    for i in range(16):
        ex = _example(i, label=2 if i == 5 else 1)
        broker.append(TOPIC, encode(ex), b"k")
    t = _trainer(tmp_path, broker)
    MicroBatchRuntime(t, broker, RuntimeConfig("g", batch_size=4, commit_interval_s=0)).run(
        idle_polls=3
    )
    assert dead_letters(broker, TOPIC) == {(0, 5, "invalid_value")}
    mv = FileRegistry(tmp_path / "registry").latest("feed")
    assert mv is not None and mv.metadata["examples_seen"] == 15
    # the dead letter is passed: a restart does not read (nor dead-letter) it again
    assert mv.metadata["offsets"] == {f"{TOPIC}/0": 16}


class _Broken:
    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def predict_learn_featurised(self, idx, val, y):  # type: ignore[no-untyped-def]
        raise FloatingPointError("half-way")


def test_a_learner_failing_mid_update_stops_the_runtime_uncommitted(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    for r in _records(0, 20):
        broker.append(TOPIC, encode(r.value), b"k")
    t = _trainer(tmp_path, broker)
    t._load()
    t.learner = _Broken(t.learner)  # type: ignore[assignment]
    rt = MicroBatchRuntime(t, broker, RuntimeConfig("g", batch_size=20, commit_interval_s=0))
    with pytest.raises(StateLost):
        rt.run(idle_polls=3)
    assert rt.stats.dead_lettered == 0  # not retried record by record
    assert broker.group("g").committed == {}
    assert dead_letters(broker, TOPIC) == set()


def test_offline_versions_are_never_the_resume_point(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    t.assign([(TOPIC, 0)])
    t.process(_records(0, 16))
    t.advance({(TOPIC, 0): 16})
    t.publish()
    online = t.version
    registry = t.registry
    assert t.learner is not None
    offline = registry.publish("feed", t.learner.snapshot(), {"origin": "offline"})
    registry.set_stage("feed", offline.version, "candidate")
    t2 = _trainer(tmp_path)
    assert t2.assign([(TOPIC, 0)]) == {(TOPIC, 0): 16}
    assert t2.version == online and not is_online(offline)


def test_a_snapshot_of_other_topics_starts_a_new_lineage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = MemoryBroker(partitions=1)
    a.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    for r in _records(0, 24):
        a.append(TOPIC, encode(r.value), b"k")
    MicroBatchRuntime(_trainer(tmp_path, a), a, RuntimeConfig("g", commit_interval_s=0)).run(
        idle_polls=3
    )
    old = FileRegistry(tmp_path / "registry").latest("feed")
    assert old is not None and old.metadata["examples_seen"] == 24

    b = MemoryBroker(partitions=1)  # another cluster: new topic ids, fewer records
    b.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    for r in _records(0, 8):
        b.append(TOPIC, encode(r.value), b"k")
    t = _trainer(tmp_path, b)
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.learning.trainer"):
        starts = t.assign([(TOPIC, 0)])
    assert starts == {(TOPIC, 0): -2}  # the beginning of the new topic
    assert sum("new lineage" in r.message for r in caplog.records) == 1
    MicroBatchRuntime(t, b, RuntimeConfig("g", commit_interval_s=0)).run(idle_polls=3)
    new = FileRegistry(tmp_path / "registry").latest("feed")
    assert new is not None
    assert new.metadata["parent_version"] == old.version
    assert new.metadata["examples_seen"] == 8
    assert new.metadata["offsets"] == {f"{TOPIC}/0": 8}
    assert new.metadata["topic_ids"] == b.topic_ids([TOPIC])
    assert new.metadata["lineage_id"] != old.metadata["lineage_id"]


def test_an_offset_beyond_the_log_end_starts_a_new_lineage(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    broker.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    t = _trainer(tmp_path)
    t.assign([(TOPIC, 0)])
    t.process(_records(0, 8))
    t.advance({(TOPIC, 0): 500})
    t.publish()  # no topic ids recorded (no cluster): only the offset can tell
    t2 = _trainer(tmp_path, broker)
    assert t2.assign([(TOPIC, 0)]) == {(TOPIC, 0): -2}
    assert t2.examples_seen == 0 and t2.version == t.version


def _positive(i: int, label_ts: float) -> TrainingExample:
    ex = _example(i, label=1)
    return TrainingExample(
        **{**{f: getattr(ex, f) for f in ex.__struct_fields__}, "label_ts": label_ts}
    )


def test_serving_only_versions_between_snapshots_and_resume_from_a_snapshot(
    tmp_path: Path,
) -> None:
    now = [100.0]
    cfg = TrainerConfig(
        definition=FEED.with_spec(SPEC),
        batch_size=1000,  # nothing learned before a publish: the publish learns it
        flush_after_s=1e9,
        snapshot_interval_s=10.0,
        publish_interval_s=1.0,
        keep_versions=3,
    )
    registry = FileRegistry(tmp_path / "registry")
    t = OnlineTrainer(TOPICS, registry, cfg, clock=lambda: now[0])
    t.assign([(TOPIC, 0)])
    kinds = []
    off = 0
    for step in range(14):
        now[0] = 100.0 + step * 0.5
        recs = [
            Record(TOPIC, 0, off, b"k", _positive(off, now[0] - 2.0), timestamp=now[0] - 1.0),
            Record(TOPIC, 0, off + 1, b"k", _example(off + 1)),
        ]
        off += 2
        t.process(recs)
        if t.advance({(TOPIC, 0): off}):
            mv = registry.latest("feed")
            assert mv is not None
            kinds.append("serving-only" if mv.serving_only else "full")
            assert mv.metadata["offsets"] == {f"{TOPIC}/0": off}  # learned up to here
            assert mv.metadata["examples_seen"] == off
            fresh = mv.metadata["freshness"]
            # the positives learned since the version before, each engaged 2 s and
            # joined 1 s before it was learned (at the publish)
            assert fresh["positives"] == len(fresh["sample"]) > 0
            assert all(row == [now[0] - 2.0, now[0] - 1.0, now[0]] for row in fresh["sample"][-1:])
    # a full version first, then one serving-only version a second, then a full one
    assert kinds[0] == "full" and kinds[1:] == ["serving-only"] * (len(kinds) - 1)
    now[0] = 111.0
    t.process([Record(TOPIC, 0, off, b"k", _example(off))])
    off += 1
    assert t.advance({(TOPIC, 0): off})
    full = registry.latest("feed")
    assert full is not None and not full.serving_only
    now[0] = 112.0
    t.process([Record(TOPIC, 0, off, b"k", _example(off))])
    off += 1
    assert t.advance({(TOPIC, 0): off})
    light = registry.latest("feed")
    assert light is not None and light.serving_only
    assert not (light.path / "state.npz").exists()
    with pytest.raises(RegistryError, match="serving-only"):
        registry.load_learner(light)
    # retention: the newest 3, and the resume points (the first and the last full ones)
    kept = [mv.version for mv in registry.versions("feed")]
    assert full.version == light.version - 1
    assert kept == [1, light.version - 2, full.version, light.version]
    # a crash now: the restart resumes from the full version, not the newer serving-only one
    t2 = OnlineTrainer(TOPICS, registry, cfg, clock=lambda: now[0])
    assert t2.assign([(TOPIC, 0)]) == {(TOPIC, 0): full.metadata["offsets"][f"{TOPIC}/0"]}
    assert t2.examples_seen == full.metadata["examples_seen"] == off - 1


def test_a_pause_in_the_input_still_gets_its_last_examples_served(tmp_path: Path) -> None:
    """A serving-only version that is due goes out on a quiet tick, covering everything
    learned (its offsets included), without waiting for more input."""
    now = [100.0]
    cfg = TrainerConfig(
        definition=FEED.with_spec(SPEC),
        batch_size=1000,
        flush_after_s=1e9,
        snapshot_interval_s=1e9,
        publish_interval_s=1.0,
    )
    registry = FileRegistry(tmp_path / "registry")
    t = OnlineTrainer(TOPICS, registry, cfg, clock=lambda: now[0])
    t.assign([(TOPIC, 0)])
    assert t.tick(now[0])  # version 1 (full), before any example
    t.process(_records(0, 5))
    now[0] = 101.0
    assert t.tick(now[0]) == []  # due, but records since the last advance: offsets lag
    assert t.advance({(TOPIC, 0): 5})  # version 2, serving-only
    now[0] = 101.5
    t.process(_records(5, 3))
    assert t.advance({(TOPIC, 0): 8}) == []  # not due yet
    assert t.tick(now[0]) == []
    now[0] = 102.2
    assert t.tick(now[0])  # quiet and due: version 3
    mv = registry.latest("feed")
    assert mv is not None and mv.version == 3 and mv.serving_only
    assert mv.metadata["examples_seen"] == 8
    assert mv.metadata["offsets"] == {f"{TOPIC}/0": 8}
    assert t.tick(now[0] + 5) == []  # nothing learned since


def test_fingerprint_sum_is_the_sum_of_each_examples_fingerprint() -> None:
    rng = np.random.default_rng(3)
    parts = rng.integers(0, 5, 2000).astype(np.int32)
    offsets = rng.integers(0, 1 << 40, 2000).astype(np.int64)
    each = [example_fingerprint(TOPIC, int(p), int(o)) for p, o in zip(parts, offsets, strict=True)]
    want = sum(each) % (1 << 64)
    assert fingerprint_sum(TOPIC, parts, offsets) == want
    assert fingerprint_sum(TOPIC, parts[:0], offsets[:0]) == 0
    # another partition or offset is another example
    assert example_fingerprint(TOPIC, 0, 1) != example_fingerprint(TOPIC, 1, 0)


def test_decoded_batches_learn_as_records_do(tmp_path: Path) -> None:
    """The runtime hands the trainer columns (``RecordBatch``, the decoder's structs);
    tests and retries hand it ``Record``s of full examples: both learn the same model."""
    recs = _records(0, 50)
    a = _trainer(tmp_path / "a")
    a.assign([(TOPIC, 0)])
    a.process(recs)
    b = _trainer(tmp_path / "b")
    b.assign([(TOPIC, 0)])
    decode = b.inputs()[TOPIC]
    values = decode.many([encode(r.value) for r in recs])  # type: ignore[attr-defined]
    batch = RecordBatch(
        TOPIC,
        np.zeros(50, np.int32),
        np.arange(50, dtype=np.int64),
        values,
        recs,
    )
    b.process_batch(batch)
    a.finish()
    b.finish()
    assert a.learner is not None and b.learner is not None
    np.testing.assert_array_equal(
        a.learner.predict_proba_many(PROBES), b.learner.predict_proba_many(PROBES)
    )
    assert a.fingerprint == b.fingerprint and a.examples_seen == b.examples_seen == 50


def test_a_revoked_partitions_pending_examples_are_dropped_and_read_again(
    tmp_path: Path,
) -> None:
    t = _trainer(tmp_path)
    t.assign([(TOPIC, 0), (TOPIC, 1)])
    recs = [Record(TOPIC, i % 2, i // 2, b"k", _example(i)) for i in range(20)]
    t.process(recs)  # 16 learned (2 chunks of 8), 4 pending: offsets 8, 9 of each partition
    assert t._pending_n == 4
    t.revoke([(TOPIC, 1)])
    assert t._pending_n == 2
    assert t._resume_offsets() == {f"{TOPIC}/0": 8, f"{TOPIC}/1": 8}
    t.process([Record(TOPIC, 0, 10, b"k", _example(20))])
    t.finish()
    assert t.examples_seen == 19


def test_a_learner_never_resumes_on_inputs_the_model_no_longer_declares(tmp_path: Path) -> None:
    """A feature renamed in the project after a version was trained: an error naming it,
    not a learner reading zeros."""
    t = _trainer(tmp_path)
    t.assign([(TOPIC, 0)])
    t.process(_records(0, 16))
    t.advance({(TOPIC, 0): 16})
    t.publish()
    renamed = FeatureSpec(("user_id", "item_id"), ("n_renamed",), hash_bits=SPEC.hash_bits)
    t2 = _trainer(tmp_path, definition=FEED.with_spec(renamed))
    with pytest.raises(CatalogError, match=r"no longer declared: \['n'\], new: \['n_renamed'\]"):
        t2.assign([(TOPIC, 0)])


def test_freshness_counts_served_positives_only(tmp_path: Path) -> None:
    """A replayed log's positives (never served) happened whenever the log says, maybe
    months ago: they are learned, but no version's freshness sample holds them."""
    now = [100.0]
    cfg = TrainerConfig(
        definition=FEED.with_spec(SPEC), batch_size=1000, flush_after_s=1e9, publish_interval_s=1.0
    )
    registry = FileRegistry(tmp_path / "registry")
    t = OnlineTrainer(TOPICS, registry, cfg, clock=lambda: now[0])
    t.assign([(TOPIC, 0)])
    replayed = msgspec.structs.replace(
        _positive(0, 5.0), served_version=None, served_score=None, served=False
    )
    t.process([Record(TOPIC, 0, 0, b"k", replayed, timestamp=6.0)])
    t.process([Record(TOPIC, 0, 1, b"k", _positive(1, now[0] - 2.0), timestamp=now[0] - 1.0)])
    assert t.advance({(TOPIC, 0): 2})
    mv = registry.latest("feed")
    assert mv is not None and mv.metadata["examples_seen"] == 2
    assert mv.metadata["freshness"]["sample"] == [[now[0] - 2.0, now[0] - 1.0, now[0]]]
