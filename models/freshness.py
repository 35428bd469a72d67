"""Freshness: seconds from an engagement to being served by a model that learned it.

For every positive example the online trainer learns it keeps three times: ``label_ts``
(event time of the engagement that made the label 1), ``joined_at`` (when the joiner
emitted the example) and ``learned_at`` (when the trainer learned it). Each published
version carries, in its metadata under ``"freshness"``, the positives it learned since the
version before (:class:`PositivesSample`: all of them up to ``capacity``, a uniform
sample beyond). Serving knows when it swapped a version in; the first version serving
answers with that learned an example is the first one at or above the version whose
sample holds it (of the same lineage). So, for an engagement at ``label_ts`` learned by
version ``u`` (published at ``created_at(u)``) and first served in version ``v >= u``
swapped in at ``swapped_at``::

    freshness    = swapped_at − label_ts
                 = (joined_at − label_ts)       join wait: label window, joiner commit
                 + (learned_at − joined_at)     trainer lag: transit, batching
                 + (created_at(u) − learned_at) publish: waiting for the version, writing it
                 + (swapped_at − created_at(u)) swap: announcement, loading, skipped versions

:func:`measure` computes these for one swap; serving observes them as histograms and
``streamlearn up`` reports their quantiles. Pure functions, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: The metadata key a version's sample is stored under.
METADATA_KEY: Final = "freshness"
#: The stages of :class:`Freshness`, in order (also the metric's label values).
STAGES: Final = ("join_wait", "trainer_lag", "publish", "swap")
#: Positives kept per version before sampling starts.
DEFAULT_CAPACITY: Final = 1000


@dataclass(frozen=True)
class Freshness:
    """One engagement's path to serving, in seconds (the stages add up to ``total``)."""

    total: float
    join_wait: float
    trainer_lag: float
    publish: float
    swap: float

    def stages(self) -> dict[str, float]:
        """The stages by name (:data:`STAGES`)."""
        return {s: getattr(self, s) for s in STAGES}


@dataclass
class PositivesSample:
    """The positives learned since the last published version: every one up to
    ``capacity``, then a uniform reservoir sample (``positives`` counts them all)."""

    capacity: int = DEFAULT_CAPACITY
    seed: int = 0
    positives: int = 0
    rows: list[tuple[float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"expected a capacity of at least 1, got {self.capacity}")
        self._rng = random.Random(self.seed)

    def add(self, label_ts: float, joined_at: float, learned_at: float) -> None:
        """Count one learned positive (reservoir sampling beyond ``capacity``)."""
        self.positives += 1
        row = (label_ts, joined_at, learned_at)
        if len(self.rows) < self.capacity:
            self.rows.append(row)
            return
        j = self._rng.randrange(self.positives)
        if j < self.capacity:
            self.rows[j] = row

    def to_metadata(self) -> dict[str, Any]:
        """JSON-safe ``{"positives": n, "sample": [[label_ts, joined_at, learned_at], …]}``."""
        return {"positives": self.positives, "sample": [list(r) for r in self.rows]}

    def clear(self) -> None:
        """Start the next version's sample."""
        self.positives = 0
        self.rows = []


def sample_of(metadata: Mapping[str, Any]) -> list[tuple[float, float, float]]:
    """The ``(label_ts, joined_at, learned_at)`` rows a version's metadata carries (none
    when it has no or a malformed sample)."""
    raw = metadata.get(METADATA_KEY)
    if not isinstance(raw, Mapping):
        return []
    out = []
    for row in raw.get("sample") or ():
        if isinstance(row, Sequence) and len(row) == 3:
            try:
                out.append((float(row[0]), float(row[1]), float(row[2])))
            except (TypeError, ValueError):
                continue
    return out


def measure(learned: Iterable[Mapping[str, Any]], swapped_at: float) -> list[Freshness]:
    """Freshness of every sampled positive of the versions ``learned`` (their metadata,
    each with ``created_at``) that serving first answers with from ``swapped_at`` on."""
    out = []
    for meta in learned:
        created = float(meta["created_at"])
        for label_ts, joined_at, learned_at in sample_of(meta):
            out.append(
                Freshness(
                    total=swapped_at - label_ts,
                    join_wait=joined_at - label_ts,
                    trainer_lag=learned_at - joined_at,
                    publish=created - learned_at,
                    swap=swapped_at - created,
                )
            )
    return out


def newly_served(
    versions: Sequence[Mapping[str, Any]], served_before: int | None, swapped: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    """The versions whose positives are first served by the swap to ``swapped``.

    ``versions``: metadata of the model's versions (any order; missing ones are simply
    absent); ``served_before``: the highest version of the lineage served before this
    swap (``None``: nothing counted yet, only ``swapped`` itself counts). A version counts
    when it is above ``served_before``, at or below the swapped version, and of the same
    lineage (``lineage_id``) — a rollback or a version of another lineage counts nothing.
    """
    top = int(swapped["version"])
    if served_before is not None and top <= served_before:
        return []
    lineage = swapped.get("lineage_id")
    low = top - 1 if served_before is None else served_before
    return sorted(
        (m for m in versions if low < int(m["version"]) <= top and m.get("lineage_id") == lineage),
        key=lambda m: int(m["version"]),
    )


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (linear between order statistics); ``None`` if
    empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
