"""What users do after an impression, and when: engagements with realistic delays.

A shown item is clicked with its true CTR. A click may be followed by a like, a share
or a conversion (each with its own probability, later than the click). An item that is
not clicked is hidden with probability ``hide_rate · 2·b / (p + b)`` (``p`` its CTR,
``b`` the world's base CTR): an average item at ``hide_rate``, disliked items up to twice
that, liked items rarely. Every delay is exponential with mean ``mean_delay_s`` and
capped at ``max_delay_s`` after the impression.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Behaviour:
    """Engagement probabilities and delays (seconds)."""

    mean_delay_s: float = 2.0
    max_delay_s: float = 6.0
    like_rate: float = 0.2
    share_rate: float = 0.05
    conversion_rate: float = 0.03
    hide_rate: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.mean_delay_s <= self.max_delay_s:
            raise ValueError(
                "expected 0 < mean_delay_s <= max_delay_s, got "
                f"{self.mean_delay_s} and {self.max_delay_s}"
            )
        rates = (self.like_rate, self.share_rate, self.conversion_rate, self.hide_rate)
        if not all(0.0 <= r <= 1.0 for r in rates):
            raise ValueError(f"engagement rates must be in [0, 1], got {rates}")


@dataclass(frozen=True)
class Shown:
    """One impression: who saw what, where (surface and position), for which request."""

    user_id: str
    item_id: str
    request_id: str
    position: int
    category: str
    surface: str = "feed"


@dataclass(order=True, frozen=True)
class Pending:
    """An engagement scheduled for ``due`` (monotonic seconds)."""

    due: float
    seq: int
    type: str = field(compare=False)
    shown: Shown = field(compare=False)


class Schedule:
    """Engagements waiting for their time: a heap ordered by due time."""

    def __init__(self) -> None:
        self._heap: list[Pending] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, type_: str, shown: Shown) -> None:
        """Schedule one engagement."""
        self._seq += 1
        heapq.heappush(self._heap, Pending(due, self._seq, type_, shown))

    def next_due(self) -> float | None:
        """Due time of the earliest engagement, ``None`` when there is none."""
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> list[Pending]:
        """Remove and return every engagement due at or before ``now``, earliest first."""
        out: list[Pending] = []
        while self._heap and self._heap[0].due <= now:
            out.append(heapq.heappop(self._heap))
        return out

    def clear(self) -> int:
        """Drop everything still scheduled; return how many were dropped."""
        n = len(self._heap)
        self._heap.clear()
        return n


def sample_engagements(
    rng: np.random.Generator, behaviour: Behaviour, ctr: float, base_ctr: float
) -> list[tuple[float, str]]:
    """``(delay_s, type)`` of what the user does with one impression of true CTR ``ctr``."""
    b = behaviour
    if rng.random() >= ctr:
        hide_p = b.hide_rate * 2.0 * base_ctr / (ctr + base_ctr)
        return [(_delay(rng, b, 0.0), "hide")] if rng.random() < hide_p else []
    click = _delay(rng, b, 0.0)
    out = [(click, "click")]
    for rate, type_ in (
        (b.like_rate, "like"),
        (b.share_rate, "share"),
        (b.conversion_rate, "conversion"),
    ):
        if rng.random() < rate:
            out.append((_delay(rng, b, click), type_))
    return out


def _delay(rng: np.random.Generator, b: Behaviour, after: float) -> float:
    return min(after + rng.exponential(b.mean_delay_s), b.max_delay_s)
