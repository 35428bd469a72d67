"""The trainer's window of learned example ids, and the trainer dropping duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.streams.contracts import decode_example
from streamlearn.streams.learning.dedup import SeenIds, example_ids
from streamlearn.streams.learning.trainer import SEEN_FILE, is_resume_point
from streamlearn.streams.testing.checks import FakeClock, clean_run, run
from streamlearn.streams.testing.memory import MemoryBroker
from tests.unit.streams.scenarios import TOPICS, TRAIN_DUPLICATES, TRAINER


def test_ids_are_per_request_and_item() -> None:
    ids = example_ids([("r1", "a"), ("r1", "b"), ("r2", "a"), ("r1", "a")])
    assert ids.dtype == np.uint64 and len(set(ids.tolist())) == 3 and ids[0] == ids[3]


def test_fresh_drops_what_was_added_and_repeats_within_a_batch() -> None:
    seen = SeenIds(capacity=100, chunk=4)
    seen.add(np.array([1, 2, 3, 4, 5, 6], dtype=np.uint64))  # one sealed chunk, two open
    got = seen.fresh(np.array([7, 1, 7, 6, 8, 4], dtype=np.uint64))
    assert got.tolist() == [True, False, False, False, True, False]
    assert len(seen) == 6


def test_the_window_forgets_the_oldest_chunks_and_round_trips() -> None:
    seen = SeenIds(capacity=8, chunk=4)
    seen.add(np.arange(1, 13, dtype=np.uint64))  # 12 ids: the first chunk is dropped
    assert len(seen) == 8
    assert seen.contains(np.arange(1, 13, dtype=np.uint64)).tolist() == [False] * 4 + [True] * 8
    back = SeenIds.from_bytes(seen.to_bytes(), capacity=8, chunk=4)
    assert back.contains(np.arange(1, 13, dtype=np.uint64)).tolist() == [False] * 4 + [True] * 8
    with pytest.raises(ValueError, match="uint64"):
        SeenIds.from_bytes(SeenIds().to_bytes().replace(b"<u8", b"<i8"))


def test_the_trainer_learns_each_request_and_item_once(tmp_path: Path) -> None:
    broker, got = clean_run(TRAINER, tmp_path)
    examples = [
        decode_example(m.value())
        for m in broker.messages(TOPICS.training_examples("feed"))
        if m.value() not in (None, b"{") and b'"label":2' not in (m.value() or b"")
    ]
    distinct = set(example_ids((e.request_id, e.item_id) for e in examples).tolist())
    n_dup = sum(len(v) for v in TRAIN_DUPLICATES.values())
    assert len(examples) == len(distinct) + n_dup
    assert got["examples_seen"] == len(distinct)
    assert got["duplicates_dropped"] == n_dup
    assert int(got["ids_fingerprint"]) == sum(distinct) % (1 << 64)
    # the window travels with each full version, and a restart drops what it learned
    registry = FileRegistry(tmp_path / "registry")
    last = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
    window = SeenIds.from_bytes(registry.read_file(last, SEEN_FILE) or b"")
    assert len(window) == len(distinct)


def test_a_duplicate_of_an_example_learned_before_the_restart_is_dropped(
    tmp_path: Path,
) -> None:
    """Part 1 repeats examples of part 0; the trainer stops (a snapshot) in between."""
    broker = MemoryBroker()
    TRAINER.setup(broker)
    TRAINER.produce(broker, 0)
    run(TRAINER, broker, tmp_path, FakeClock())
    TRAINER.produce(broker, 1)
    run(TRAINER, broker, tmp_path, FakeClock())
    _, want = clean_run(TRAINER, tmp_path / "clean")
    registry = FileRegistry(tmp_path / "registry")
    last = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
    assert last.metadata["duplicates_dropped"] == want["duplicates_dropped"]
    assert last.metadata["ids_fingerprint"] == want["ids_fingerprint"]
