"""Activity events as the simulator publishes them, and deliberately malformed ones."""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from streamlearn.simulator.behaviour import Shown
from streamlearn.streams.contracts import ActivityEvent, encode

#: Kinds of malformed events, each rejected by ``streamlearn.streams.contracts.decode_event``.
BAD_KINDS: Final = ("bad_json", "missing_field", "unknown_type")


class EventIds:
    """Unique event ids: a per-run prefix and a counter."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._n = 0

    def next(self) -> str:
        """A new event id."""
        self._n += 1
        return f"{self.run_id}-e{self._n}"


def activity_event(event_id: str, type_: str, shown: Shown) -> bytes:
    """One encoded activity event about ``shown``, stamped with the wall clock now."""
    return encode(
        ActivityEvent(
            event_id=event_id,
            type=type_,
            ts=time.time(),
            user_id=shown.user_id,
            item_id=shown.item_id,
            surface=shown.surface,
            request_id=shown.request_id,
            position=shown.position,
            context={"category": shown.category},
        )
    )


def bad_event(rng: np.random.Generator, event_id: str, shown: Shown) -> tuple[str, bytes]:
    """A malformed event about ``shown``: ``(kind, raw bytes)``, kind from ``BAD_KINDS``."""
    kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
    good = activity_event(event_id, "impression", shown)
    if kind == "bad_json":
        return kind, good[: len(good) // 2]
    if kind == "missing_field":
        return kind, good.replace(b'"user_id"', b'"user"', 1)
    return kind, good.replace(b'"impression"', b'"teleport"', 1)
