"""The loop's figures from committed state: the highest count per partition, from the
processes' gauges and from their stores on disk."""

from __future__ import annotations

from pathlib import Path

from streamlearn.stack.committed import METRIC, Committed
from streamlearn.streams.state.store import PartitionStore


def _sample(partition: int, n: float, outcome: str = "applied") -> tuple[dict[str, str], float]:
    labels = {"processor": "features", "topic": "a", "partition": str(partition)}
    return {**labels, "outcome": outcome}, n


def test_the_newest_owner_of_each_partition_counts_once() -> None:
    c = Committed()
    c.observe("features", {METRIC: [_sample(0, 10), _sample(1, 5)]})  # worker 1
    c.observe("features", {METRIC: [_sample(1, 7), _sample(2, 3)]})  # worker 2 took p1
    c.observe("features", {METRIC: [_sample(0, 4)]})  # an old incarnation's last scrape
    c.observe("features", {METRIC: [_sample(2, 1, "dead_lettered")]})
    assert c.total("features", "a", "applied") == 10 + 7 + 3
    assert c.total("features", "a", "dead_lettered") == 1
    assert c.total("joiner", "a", "applied") == 0


def _store(path: Path, ids: dict[str, str], counts: dict[str, int]) -> None:
    s = PartitionStore(path, int(path.name[1:]))
    s.stamp(ids)
    for name, n in counts.items():
        s.count(name, n)
    s.commit({"a": sum(counts.values())})
    s.close()


def test_stores_on_disk_of_this_cluster_only(tmp_path: Path) -> None:
    ids = {"a": "id-now"}
    _store(tmp_path / "w1" / "features" / "p0000", ids, {"applied:a": 8, "dead_lettered:a": 2})
    _store(tmp_path / "w2" / "features" / "p0000", ids, {"applied:a": 12})  # moved on
    _store(tmp_path / "w2" / "features" / "p0001", {"a": "id-before"}, {"applied:a": 99})
    _store(tmp_path / "w1" / "joiner" / "p0001", ids, {"emitted:t.feed": 6, "marks": 3})
    c = Committed.from_stores(tmp_path, ("features", "joiner"), ids)
    assert c.total("features", "a", "applied") == 12
    assert c.total("features", "a", "dead_lettered") == 2
    assert c.total("joiner", "t.feed", "emitted") == 6
    live = Committed()
    live.observe("features", {METRIC: [_sample(0, 11), _sample(3, 4)]})
    live.merge(c)
    assert live.total("features", "a", "applied") == 12 + 4
