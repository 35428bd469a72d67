"""Histogram quantiles and means as ``up`` reads them from its children's metrics."""

from __future__ import annotations

import pytest

from streamlearn.stack.scrape import Samples, histogram_mean, histogram_quantile

INF = float("inf")


def _hist(name: str, model: str, buckets: dict[float, float], total: float) -> Samples:
    rows = [({"model": model, "le": str(le)}, c) for le, c in buckets.items()]
    return {
        f"{name}_bucket": rows,
        f"{name}_count": [({"model": model}, buckets[INF])],
        f"{name}_sum": [({"model": model}, total)],
    }


def _merge(*parts: Samples) -> Samples:
    out: Samples = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


def test_quantile_interpolates_within_the_bucket_and_sums_series() -> None:
    a = _hist("h", "feed", {1.0: 10, 2.0: 30, 4.0: 40, INF: 40}, 70.0)
    b = _hist("h", "ads", {1.0: 0, 2.0: 10, 4.0: 10, INF: 10}, 15.0)
    s = _merge(a, b)
    # feed: 20 of 40 is half-way through the (1, 2] bucket
    assert histogram_quantile(s, "h", 0.5, model="feed") == pytest.approx(1.5)
    # both: 25 of 50 — 10 below 1, 40 below 2
    assert histogram_quantile(s, "h", 0.5) == pytest.approx(1.0 + 15 / 30)
    assert histogram_quantile(s, "h", 0.0, model="feed") == pytest.approx(0.0)
    assert histogram_mean(s, "h") == pytest.approx(85.0 / 50)
    assert histogram_mean(s, "h", model="ads") == pytest.approx(1.5)


def test_beyond_the_last_bound_gives_that_bound_and_empty_gives_none() -> None:
    s = _hist("h", "feed", {1.0: 1, 2.0: 1, INF: 10}, 100.0)
    assert histogram_quantile(s, "h", 0.99) == 2.0
    assert histogram_quantile({}, "h", 0.5) is None
    assert histogram_mean({}, "h") is None
    empty = _hist("h", "feed", {1.0: 0, INF: 0}, 0.0)
    assert histogram_quantile(empty, "h", 0.5) is None
