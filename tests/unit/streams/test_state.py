"""Partitioned state without a broker: commits, provenance, stale stores, restores."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from streamlearn.streams.state.changelog import OFFSETS_KEY, RESET_KEY
from streamlearn.streams.state.partitioned import PartitionedState
from streamlearn.streams.state.restore import RestoreSource
from streamlearn.streams.state.store import Durability, PartitionStore, Provenance
from streamlearn.streams.testing.memory import MemoryBroker

CHANGELOG = "t.changelog"
INPUT = "t.input"


def test_reads_see_pending_writes_and_commit_writes_state_with_offsets(tmp_path: Path) -> None:
    s = PartitionStore(tmp_path / "p", 0)
    assert s.is_empty()
    s.put("a", b"1")
    s.put("b", b"2")
    s.delete("b")
    assert s.get("a") == b"1" and s.get("b") is None
    assert s.items() == [("a", b"1")]
    s.discard()
    assert s.get("a") is None
    s.put("a", b"1")
    s.stamp({INPUT: "id-1"})
    s.commit({INPUT: 7})
    s.close()
    s = PartitionStore(tmp_path / "p", 0)
    assert s.items() == [("a", b"1")]
    assert s.offsets() == {INPUT: 7}
    assert s.identity() == {INPUT: "id-1"}
    s.close()


@pytest.mark.parametrize("durability", list(Durability))
def test_every_durability_commits(tmp_path: Path, durability: Durability) -> None:
    s = PartitionStore(tmp_path / "p", 0, durability)
    s.put("k", b"v")
    s.commit({INPUT: 1})
    s.close()
    s = PartitionStore(tmp_path / "p", 0, durability)
    assert s.get("k") == b"v" and s.offsets() == {INPUT: 1}
    s.close()


def test_provenance_says_why_state_is_stale() -> None:
    now = Provenance({INPUT: "new", CHANGELOG: "c"}, {INPUT: 10})
    assert now.stale({INPUT: "new", CHANGELOG: "c"}, {INPUT: 10}) is None
    assert "had id old, now new" in (now.stale({INPUT: "old"}, {INPUT: 3}) or "")
    assert "beyond the partition's log end 10" in (now.stale({INPUT: "new"}, {INPUT: 11}) or "")
    assert "no topic ids" in (now.stale(None, {INPUT: 1}) or "")


def _write(state: PartitionedState, p: int, provenance: Provenance, offsets: int) -> None:
    store = state.open(p, provenance)
    store.put("k", b"v")
    state.commit({p: {INPUT: offsets}})


def test_a_store_of_a_recreated_topic_is_wiped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = PartitionedState(tmp_path, None)
    _write(state, 0, Provenance({INPUT: "a"}, {INPUT: 5}), 5)
    state.close_all()
    with caplog.at_level(logging.WARNING, logger="streamlearn.streams.state.partitioned"):
        store = state.open(0, Provenance({INPUT: "b"}, {INPUT: 5}))
    assert store.is_empty() and store.offsets() == {}
    assert [r.message for r in caplog.records if "stale state" in r.message] != []
    assert len(caplog.records) == 1
    state.close_all()


def test_a_store_beyond_the_log_end_is_wiped(tmp_path: Path) -> None:
    state = PartitionedState(tmp_path, None)
    _write(state, 0, Provenance({INPUT: "a"}, {INPUT: 5}), 5)
    state.close_all()
    assert state.open(0, Provenance({INPUT: "a"}, {INPUT: 4})).is_empty()
    state.close_all()


def test_restore_brings_back_state_offsets_and_ids(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=2)
    prov = Provenance({INPUT: "a", CHANGELOG: broker.topic_ids([CHANGELOG])[CHANGELOG]}, {INPUT: 9})
    state = PartitionedState(tmp_path / "one", CHANGELOG)
    store = state.open(1, prov)
    store.put("x", b"1")
    store.put("y", b"2")
    for _, p, k, v, h in state.changelog({1: {INPUT: 4}}):
        broker.append(CHANGELOG, v, k.encode(), p, h)
    state.commit({1: {INPUT: 4}})
    store.delete("y")
    for _, p, k, v, h in state.changelog({1: {}}):  # a commit without new input offsets
        broker.append(CHANGELOG, v, k.encode(), p, h)
    state.commit({1: {}})
    state.close_all()

    other = PartitionedState(tmp_path / "two", CHANGELOG)
    restored = other.open(1, prov, RestoreSource(broker))
    assert restored.items() == [("x", b"1")]
    assert restored.offsets() == {INPUT: 4}
    assert restored.identity() == dict(prov.topic_ids)
    other.close_all()


def test_a_stale_changelog_is_reset_and_its_state_never_comes_back(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    old = {INPUT: "old"}
    broker.append(CHANGELOG, b"stale", b"k", 0)
    broker.append(
        CHANGELOG, orjson.dumps({"offsets": {INPUT: 3}, "topic_ids": old}), OFFSETS_KEY.encode(), 0
    )
    state = PartitionedState(tmp_path / "a", CHANGELOG)
    store = state.open(0, Provenance({INPUT: "new"}, {INPUT: 0}), RestoreSource(broker))
    assert store.is_empty()  # starts over from the beginning of the input
    assert [m.key() for m in broker.messages(CHANGELOG)][-1] == RESET_KEY.encode()
    # what came after the reset is restored, what came before it is not
    store.put("j", b"fresh")
    _commit(state, broker, 0, 1)
    state.close_all()
    again = PartitionedState(tmp_path / "b", CHANGELOG)
    store = again.open(0, Provenance({INPUT: "new"}, {INPUT: 1}), RestoreSource(broker))
    assert store.items() == [("j", b"fresh")] and store.offsets() == {INPUT: 1}
    again.close_all()


def test_an_offsets_record_of_an_older_version_is_read(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    broker.append(CHANGELOG, b"v", b"k", 0)
    broker.append(CHANGELOG, orjson.dumps({INPUT: 2}), OFFSETS_KEY.encode(), 0)
    state = PartitionedState(tmp_path, CHANGELOG)
    store = state.open(0, None, RestoreSource(broker))
    assert store.items() == [("k", b"v")] and store.offsets() == {INPUT: 2}
    state.close_all()


def test_an_interval_cut_short_by_a_crash_is_never_restored(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    state = PartitionedState(tmp_path / "one", CHANGELOG)
    store = state.open(0)
    store.put("a", b"1")
    for _, p, k, v, h in state.changelog({0: {INPUT: 2}}):
        broker.append(CHANGELOG, v, k.encode(), p, h)
    state.commit({0: {INPUT: 2}})
    store.put("a", b"2")
    store.put("b", b"2")
    cut = state.changelog({0: {INPUT: 5}})
    for _, p, k, v, h in cut[:1]:  # killed after the first write: no offsets record
        broker.append(CHANGELOG, v, k.encode(), p, h)
    state.close_all()
    restored = PartitionedState(tmp_path / "two", CHANGELOG).open(0, None, RestoreSource(broker))
    assert restored.items() == [("a", b"1")]
    assert restored.offsets() == {INPUT: 2}
    restored.close()


def test_a_store_behind_its_changelog_is_restored(tmp_path: Path) -> None:
    """A partition that comes back to a worker which owned it earlier: the changelog,
    written by the worker in between, is further than the local store."""
    broker = MemoryBroker(partitions=1)
    old = PartitionedState(tmp_path / "old", CHANGELOG)
    store = old.open(0)
    store.put("a", b"1")
    for _, p, k, v, h in old.changelog({0: {INPUT: 2}}):
        broker.append(CHANGELOG, v, k.encode(), p, h)
    old.commit({0: {INPUT: 2}})
    old.close_all()
    other = PartitionedState(tmp_path / "other", CHANGELOG)
    store = other.open(0, None, RestoreSource(broker))
    store.put("a", b"3")
    for _, p, k, v, h in other.changelog({0: {INPUT: 7}}):
        broker.append(CHANGELOG, v, k.encode(), p, h)
    other.commit({0: {INPUT: 7}})
    other.close_all()
    back = PartitionedState(tmp_path / "old", CHANGELOG).open(0, None, RestoreSource(broker))
    assert back.offsets() == {INPUT: 7} and back.items() == [("a", b"3")]
    back.close()


def _commit(state: PartitionedState, broker: MemoryBroker, p: int, offsets: int) -> None:
    for _, part, k, v, h in state.changelog({p: {INPUT: offsets}}):
        broker.append(CHANGELOG, v, k.encode(), part, h)
    state.commit({p: {INPUT: offsets}})


def test_a_fenced_writers_late_interval_is_never_restored(tmp_path: Path) -> None:
    """A worker frozen past its session time-out wakes up and commits an interval after
    another worker claimed the partition: no restore applies it."""
    broker = MemoryBroker(partitions=1)
    zombie = PartitionedState(tmp_path / "zombie", CHANGELOG)
    z = zombie.open(0, None, RestoreSource(broker))
    z.put("a", b"1")
    _commit(zombie, broker, 0, 2)
    # frozen; the partition goes to another worker, which claims and moves on
    owner = PartitionedState(tmp_path / "owner", CHANGELOG)
    o = owner.open(0, None, RestoreSource(broker))
    assert o.items() == [("a", b"1")] and o.offsets() == {INPUT: 2}
    o.put("a", b"2")
    _commit(owner, broker, 0, 4)
    # the zombie thaws and writes its next interval, closed after the owner's claim
    z.put("a", b"stale")
    z.put("z", b"stale")
    _commit(zombie, broker, 0, 3)
    o.put("b", b"3")
    _commit(owner, broker, 0, 6)
    owner.close_all()
    fresh = PartitionedState(tmp_path / "fresh", CHANGELOG).open(0, None, RestoreSource(broker))
    assert fresh.items() == [("a", b"2"), ("b", b"3")] and fresh.offsets() == {INPUT: 6}
    fresh.close()
    # the zombie's own store, ahead of what it may claim, is not trusted either
    zombie.close_all()
    back = PartitionedState(tmp_path / "zombie", CHANGELOG).open(0, None, RestoreSource(broker))
    assert back.items() == [("a", b"2"), ("b", b"3")] and back.offsets() == {INPUT: 6}
    back.close()


def test_a_store_that_wrote_last_is_kept_without_a_restore(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    state = PartitionedState(tmp_path, CHANGELOG)
    store = state.open(0, None, RestoreSource(broker))
    store.put("a", b"1")
    _commit(state, broker, 0, 2)
    state.close_all()
    source = RestoreSource(broker)
    calls: list[int] = []
    real = source.restore
    source.restore = lambda topic, store, **kw: calls.append(1) or real(topic, store, **kw)  # type: ignore[method-assign]
    again = PartitionedState(tmp_path, CHANGELOG).open(0, None, source)
    assert again.items() == [("a", b"1")] and again.offsets() == {INPUT: 2} and not calls
    again.close()


def test_meta_values_are_committed_with_the_offsets_and_restored(tmp_path: Path) -> None:
    broker = MemoryBroker(partitions=1)
    state = PartitionedState(tmp_path / "a", CHANGELOG)
    store = state.open(0, None, RestoreSource(broker))
    store.count("applied", 3)
    store.count("applied", 2)
    store.set_meta("marks", {"t": 7})
    assert store.meta() == {"applied": 5, "marks": {"t": 7}}
    store.discard()
    assert store.meta() == {}
    store.count("applied", 4)
    _commit(state, broker, 0, 4)
    store.count("applied", 1)
    state.close_all()  # the pending count is dropped with the close
    restored = PartitionedState(tmp_path / "b", CHANGELOG).open(0, None, RestoreSource(broker))
    assert restored.meta() == {"applied": 4} and restored.offsets() == {INPUT: 4}
    restored.close()
    local = PartitionStore(tmp_path / "a" / "p0000", 0)
    assert local.meta() == {"applied": 4}
    local.close()
