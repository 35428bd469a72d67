"""Replay bounds: offsets, timestamps, ``earliest``/``latest``, for all or one partition.

Syntax of one ``--from``/``--to`` value::

    earliest | latest            the start / the end of the partition
    1234                         an offset (start inclusive, end exclusive)
    2024-05-01T12:00:00Z         a timestamp (ISO 8601; naive means UTC)
    @1714564800.5                a timestamp in epoch seconds
    3:1234, 3:@1714564800        the same, for partition 3 only

A value without a partition applies to every partition that has no value of its own.
A timestamp bound ``T`` means the first offset whose record timestamp is ``>= T``
(Kafka's ``offsets_for_times`` semantics); the replay resolves it itself (see
``streamlearn.offline.replay``) because the embedded broker answers ListOffsets wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from streamlearn.offline.errors import RangeError

BoundKind = Literal["earliest", "latest", "offset", "timestamp"]
_PARTITION = re.compile(r"^(\d+):(.+)$")


@dataclass(frozen=True)
class Bound:
    """One end of a range: ``value`` is an offset, or a timestamp in epoch milliseconds."""

    kind: BoundKind
    value: int = 0

    def __str__(self) -> str:
        if self.kind in ("earliest", "latest"):
            return self.kind
        if self.kind == "offset":
            return str(self.value)
        return datetime.fromtimestamp(self.value / 1000, UTC).isoformat()


EARLIEST = Bound("earliest")
LATEST = Bound("latest")


def parse_bound(text: str) -> Bound:
    """Parse one bound without a partition prefix; raise :class:`RangeError`."""
    t = text.strip()
    if t in ("earliest", "latest"):
        return EARLIEST if t == "earliest" else LATEST
    if t.isdigit():
        return Bound("offset", int(t))
    if t.startswith("@"):
        try:
            return Bound("timestamp", round(float(t[1:]) * 1000))
        except ValueError:
            raise RangeError(f"expected @<epoch seconds>, got {text!r}") from None
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise RangeError(
            "expected earliest, latest, an offset, an ISO 8601 time or @<epoch seconds>, "
            f"got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Bound("timestamp", round(when.timestamp() * 1000))


@dataclass(frozen=True)
class Bounds:
    """Bounds per partition with a default for the others."""

    default: Bound
    per_partition: Mapping[int, Bound] = field(default_factory=dict)

    def for_partition(self, partition: int) -> Bound:
        """The bound that applies to ``partition``."""
        return self.per_partition.get(partition, self.default)


def parse_bounds(values: Iterable[str], default: Bound) -> Bounds:
    """Parse repeated ``--from``/``--to`` values (see the module docstring)."""
    overall: Bound | None = None
    per: dict[int, Bound] = {}
    for text in values:
        m = _PARTITION.match(text.strip())
        if m:
            part = int(m.group(1))
            if part in per:
                raise RangeError(f"partition {part} has two bounds, expected one (got {text!r})")
            per[part] = parse_bound(m.group(2))
        else:
            if overall is not None:
                raise RangeError(f"expected one bound for all partitions, got a second: {text!r}")
            overall = parse_bound(text)
    return Bounds(overall or default, per)


def check_range(start: Bound, end: Bound, where: str) -> None:
    """Reject ranges that are empty by construction (``latest`` start, end before start)."""
    if start.kind == "latest":
        raise RangeError(f"{where}: a range cannot start at 'latest' (it would be empty)")
    if end.kind == "earliest":
        raise RangeError(f"{where}: a range cannot end at 'earliest' (it would be empty)")
    if start.kind == end.kind and start.kind in ("offset", "timestamp") and end.value < start.value:
        raise RangeError(f"{where}: expected the end ({end}) at or after the start ({start})")
