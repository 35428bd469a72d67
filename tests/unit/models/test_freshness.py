"""Freshness on a known timeline: the stages add up, skipped versions count at the next
swap, rollbacks and other lineages count nothing, the per-version sample is bounded."""

from __future__ import annotations

import pytest

from streamlearn.models.freshness import (
    Freshness,
    PositivesSample,
    measure,
    newly_served,
    quantile,
    sample_of,
)


def _meta(version: int, created_at: float, rows: list[tuple[float, float, float]], lineage="L"):  # type: ignore[no-untyped-def]
    sample = PositivesSample()
    for r in rows:
        sample.add(*r)
    return {
        "version": version,
        "created_at": created_at,
        "lineage_id": lineage,
        "freshness": sample.to_metadata(),
    }


# An engagement at 96.0 is joined at 98.5 and learned at 100.5 into version 6 (published
# at 101.0); another at 99.0 → 99.5 → 100.8 → version 6 too; one at 101.2 → 101.4 →
# 101.6 → version 7 (published 102.0). Serving swapped version 5 in at 100.2, missed 6
# and swapped 7 in at 102.3.
V5 = _meta(5, 100.0, [(95.0, 97.0, 98.0)])
V6 = _meta(6, 101.0, [(96.0, 98.5, 100.5), (99.0, 99.5, 100.8)])
V7 = _meta(7, 102.0, [(101.2, 101.4, 101.6)])


def test_a_skipped_version_is_first_served_at_the_next_swap() -> None:
    versions = newly_served([V7, V5, V6], served_before=5, swapped=V7)
    assert [m["version"] for m in versions] == [6, 7]
    got = measure(versions, swapped_at=102.3)
    want = [
        Freshness(total=6.3, join_wait=2.5, trainer_lag=2.0, publish=0.5, swap=1.3),
        Freshness(total=3.3, join_wait=0.5, trainer_lag=1.3, publish=0.2, swap=1.3),
        Freshness(total=1.1, join_wait=0.2, trainer_lag=0.2, publish=0.4, swap=0.3),
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for name in ("total", "join_wait", "trainer_lag", "publish", "swap"):
            assert getattr(g, name) == pytest.approx(getattr(w, name)), name
        assert sum(g.stages().values()) == pytest.approx(g.total)


def test_nothing_counted_yet_counts_the_swapped_version_only() -> None:
    assert [m["version"] for m in newly_served([V5, V6, V7], None, V7)] == [7]


def test_a_rollback_or_an_older_version_counts_nothing() -> None:
    assert newly_served([V5, V6, V7], served_before=7, swapped=V6) == []
    assert newly_served([V5, V6, V7], served_before=7, swapped=V7) == []


def test_versions_of_another_lineage_are_not_counted() -> None:
    other = _meta(6, 101.0, [(96.0, 98.5, 100.5)], lineage="M")
    assert [m["version"] for m in newly_served([V5, other, V7], 5, V7)] == [7]


def test_the_sample_keeps_every_positive_up_to_its_capacity_then_a_uniform_sample() -> None:
    s = PositivesSample(capacity=100, seed=1)
    for i in range(100):
        s.add(float(i), float(i), float(i))
    assert s.positives == 100 and [r[0] for r in s.rows] == [float(i) for i in range(100)]
    for i in range(100, 10_000):
        s.add(float(i), float(i), float(i))
    assert s.positives == 10_000 and len(s.rows) == 100
    # uniform over all 10,000: about 1% of the rows from the first 100
    kept = sorted(r[0] for r in s.rows)
    assert kept[0] < 1000 and kept[-1] > 9000
    assert 3_000 < quantile(kept, 0.5) < 7_000  # type: ignore[operator]
    meta = {"freshness": s.to_metadata()}
    assert sample_of(meta) == s.rows
    s.clear()
    assert s.positives == 0 and s.rows == []


def test_malformed_samples_are_ignored() -> None:
    assert sample_of({}) == []
    assert sample_of({"freshness": "x"}) == []
    assert sample_of({"freshness": {"sample": [[1, 2], ["a", 1, 2], [1, 2, 3]]}}) == [
        (1.0, 2.0, 3.0)
    ]


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0], 0.5) == 1.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == pytest.approx(4.96)
