"""The micro-batch runtime on the in-memory broker: stops, failures, start offsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlearn.models.errors import RegistryError
from streamlearn.streams.errors import KafkaError, StreamsError
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.learning.trainer import OnlineTrainer
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.testing.memory import MemoryBroker, MemoryProducer
from tests.example import CATALOG, MODEL_NAMES
from tests.unit.streams.scenarios import TOPICS, _build_trainer, _produce_features, _produce_trainer


def _broker() -> MemoryBroker:
    b = MemoryBroker()
    b.create_topics([TOPICS.training_examples("feed")], partitions=1)
    b.create_topics(TOPICS.loop_topics(MODEL_NAMES))
    return b


def test_a_failed_final_snapshot_is_raised_not_swallowed(tmp_path: Path) -> None:
    broker = _broker()
    _produce_trainer(broker, 0)
    trainer = _build_trainer(tmp_path, broker, lambda: 0.0)
    assert isinstance(trainer, OnlineTrainer)

    def fail(full: bool = True) -> None:
        raise RegistryError("disk full")

    rt = MicroBatchRuntime(trainer, broker, RuntimeConfig("g", commit_interval_s=0))
    trainer.publish = fail  # type: ignore[assignment,method-assign]
    with pytest.raises(RegistryError, match="disk full"):
        rt.run(idle_polls=3)


class _Unacknowledged(MemoryProducer):
    """A producer whose records are never acknowledged after the first commits."""

    def __init__(self, broker: MemoryBroker, ok_flushes: int) -> None:
        super().__init__(broker)
        self.ok = ok_flushes

    def flush(self, timeout: float = 0.0) -> int:
        if self.ok <= 0:
            return len(self)
        self.ok -= 1
        return super().flush(timeout)


def test_a_failed_commit_stops_the_run_and_stores_nothing_more(tmp_path: Path) -> None:
    broker = _broker()
    _produce_features(broker, 0)
    proc = FeatureProcessor(TOPICS, tmp_path, CATALOG, cluster=broker)
    rt = MicroBatchRuntime(
        proc,
        broker,
        RuntimeConfig("g", batch_size=50, commit_interval_s=0),
        producer=_Unacknowledged(broker, ok_flushes=2),
    )
    with pytest.raises(KafkaError, match="not acknowledged"):
        rt.run(idle_polls=3)
    # what was acknowledged is stored; what was not, is not (the restart re-applies it)
    again = FeatureProcessor(TOPICS, tmp_path, CATALOG, cluster=broker)
    starts = again.assign([(TOPICS.activity, p) for p in range(4)])
    again.close()
    stored = sum(off for off in starts.values() if off >= 0)
    assert 0 < stored <= 100  # two commits of at most 50 records


class _NoStarts(FeatureProcessor):
    def assign(self, partitions):  # type: ignore[no-untyped-def]
        super().assign(partitions)
        return {}  # "use the group's committed offset": not allowed


def test_a_processor_must_say_where_every_partition_resumes(tmp_path: Path) -> None:
    broker = _broker()
    _produce_features(broker, 0)
    rt = MicroBatchRuntime(_NoStarts(TOPICS, tmp_path, CATALOG), broker, RuntimeConfig("g"))
    with pytest.raises(StreamsError, match="gave no start offset"):
        rt.run(idle_polls=3)
