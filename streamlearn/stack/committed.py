"""The loop's figures from committed state, which survives a kill -9.

The feature processor and the joiner count every record they commit, in the state
itself (``StatefulProcessor.tally``: applied, dead-lettered, skipped, and the joiner's
examples emitted), and export those counts as ``streamlearn_committed_records`` per
topic and partition. A counter of a killed process is lost with it; a committed count
is not: the worker that restores the partition restores it, exactly. ``Committed`` keeps,
per role, topic, partition and outcome, the highest count any of the role's workers (or
their earlier incarnations) reported — the partition's newest owner's. Once the
processes have stopped, ``Committed.from_stores`` reads the same counts from the stores
on disk, so the summary also has what was committed after the last scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from streamlearn.stack.scrape import Samples
from streamlearn.streams.state.store import PartitionStore

log = logging.getLogger(__name__)

METRIC = "streamlearn_committed_records"
#: (role, topic, partition, outcome)
Key = tuple[str, str, int, str]


class Committed:
    """Committed counts of the store processors (see the module docstring)."""

    def __init__(self) -> None:
        self._counts: dict[Key, int] = {}

    def observe(self, role: str, samples: Samples) -> None:
        """Take the counts in one scrape of a ``role`` process."""
        for labels, value in samples.get(METRIC, []):
            key = (role, labels["topic"], int(labels["partition"]), labels["outcome"])
            self._counts[key] = max(self._counts.get(key, 0), int(value))

    def total(self, role: str, topic: str, outcome: str) -> int:
        """Records of ``topic`` committed as ``outcome`` by ``role``, all partitions."""
        return sum(
            n for (r, t, _, o), n in self._counts.items() if (r, t, o) == (role, topic, outcome)
        )

    def merge(self, other: Committed) -> None:
        """Keep the higher of the two counts of every key."""
        for key, n in other._counts.items():
            self._counts[key] = max(self._counts.get(key, 0), n)

    @classmethod
    def from_stores(
        cls, state_dir: Path, roles: Iterable[str], topic_ids: Mapping[str, str]
    ) -> Committed:
        """The counts in the stores under ``state_dir`` (``<role>/p*``, at any depth: one
        directory per worker) whose recorded topic ids are the topics' now; for a
        partition in several workers' directories, the highest (its newest owner's)."""
        out = cls()
        for role in roles:
            for path in sorted(state_dir.glob(f"**/{role}/p[0-9]*")):
                counts = _store_counts(path, topic_ids)
                for (topic, outcome), n in (counts or {}).items():
                    key = (role, topic, int(path.name[1:]), outcome)
                    out._counts[key] = max(out._counts.get(key, 0), n)
        return out


def _store_counts(path: Path, topic_ids: Mapping[str, str]) -> dict[tuple[str, str], int] | None:
    """(topic, outcome) → count of the store at ``path``; ``None`` when it is another
    cluster's (its topic ids differ) or cannot be opened."""
    try:
        store = PartitionStore(path, int(path.name[1:]))
    except Exception as exc:  # rocksdict raises plain exceptions (locked, corrupt)
        log.warning("cannot read the committed counts of %s: %s", path, exc)
        return None
    try:
        ids = store.identity() or {}
        if any(topic_ids.get(t, was) != was for t, was in ids.items()):
            return None
        return store.counts()
    finally:
        store.close()
