"""Windowed counts: the last ``window_s`` seconds at the time they are read, in slices,
partials merged, the same online, from the changelog and point in time."""

from __future__ import annotations

import random

import pytest

from streamlearn.project import Count, Events, Feature, Project, WindowedCount
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.features.aggregates import layout
from streamlearn.streams.features.store import entity_features, merge_partials

PROJECT = Project(
    name="w",
    events=Events(impressions=["view"], engagements=["buy"]),
    surfaces=["s"],
    features=[
        Feature("item_views_1m", "item", WindowedCount(["view"], window_s=60, buckets=6)),
        Feature("item_buys", "item", Count(["buy"])),
    ],
)
CATALOG = PROJECT.catalog


def _ev(ts: float, kind: str = "view", item: str = "i1") -> ActivityEvent:
    return ActivityEvent(f"e{ts}{kind}", kind, ts, "u1", item, "s", "r", 0)


def _count(times: list[float], at: float, window: float = 60.0, width: float = 10.0) -> int:
    """What the slices count: events in the slices ``(at//w - 6, at//w]``."""
    now = int(at // width)
    return sum(1 for t in times if now - 6 < int(t // width) <= now)


def test_it_counts_the_last_window_as_of_the_time_read() -> None:
    lay = layout(CATALOG, "item")
    a = lay.new()
    times = [0.0, 5.0, 12.0, 31.0, 59.0, 61.0, 65.0]
    for t in times:
        lay.update(a, _ev(t))
    lay.update(a, _ev(66.0, "buy"))
    values = lay.values(a)
    assert values["item_views_1m"] == _count(times, 66.0)  # as of its newest event
    assert values["item_buys"] == 1
    for at in (66.0, 80.0, 100.0, 125.0, 200.0):
        assert lay.read_time_values(values, at) == {"item_views_1m": _count(times, at)}
    read = entity_features("item", "i1", values, 100.0, CATALOG)
    assert read is not None and read.values["item_views_1m"] == _count(times, 100.0)


def test_late_events_and_arrival_order() -> None:
    lay = layout(CATALOG, "item")
    rng = random.Random(3)
    times = [float(rng.randrange(0, 300)) for _ in range(200)]
    a, b = lay.new(), lay.new()
    for t in sorted(times):
        lay.update(a, _ev(t))
    for t in times:  # any order: a late event within the window still counts
        lay.update(b, _ev(t))
    va, vb = lay.values(a), lay.values(b)
    for at in (299.0, 310.0, 350.0):
        got = lay.read_time_values(vb, at)["item_views_1m"]
        assert got == lay.read_time_values(va, at)["item_views_1m"] == _count(times, at)


@pytest.mark.parametrize("split", [1, 2, 4])
def test_partials_merge_like_one_stream(split: int) -> None:
    lay = layout(CATALOG, "item")
    rng = random.Random(split)
    times = sorted(float(rng.randrange(0, 500)) for _ in range(300))
    whole = lay.new()
    parts = [lay.new() for _ in range(split)]
    for n, t in enumerate(times):
        lay.update(whole, _ev(t))
        lay.update(parts[n % split], _ev(t))
    merged = merge_partials("item", [lay.values(p) for p in parts], CATALOG)
    for at in (499.0, 520.0, 560.0):
        assert lay.read_time_values(merged, at) == lay.read_time_values(lay.values(whole), at)
