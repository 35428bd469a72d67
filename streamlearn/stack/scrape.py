"""Read the Prometheus metrics of the stack's processes (for the live view and summary)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape_families(port: int, timeout_s: float = 0.5) -> list[Metric]:
    """The metric families served at ``http://127.0.0.1:<port>/metrics`` (empty when
    unreachable), families without samples included: they say which names exist."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except OSError:
        return []
    return list(text_string_to_metric_families(text))


def samples_of(families: Iterable[Metric]) -> Samples:
    """Every sample of ``families``, by sample name."""
    out: Samples = {}
    for fam in families:
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def scrape(port: int, timeout_s: float = 0.5) -> Samples:
    """All samples served at ``http://127.0.0.1:<port>/metrics``; empty when unreachable."""
    return samples_of(scrape_families(port, timeout_s))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if _match(lab, labels))


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The first sample of ``name`` matching ``labels``, or None."""
    for lab, v in samples.get(name, []):
        if _match(lab, labels):
            return v
    return None


def quantile(samples: Samples, name: str, q: float, **labels: str) -> float | None:
    """Quantile ``q`` from a histogram's cumulative buckets (upper bound of the bucket)."""
    buckets = sorted(
        (float(lab["le"]), v)
        for lab, v in samples.get(f"{name}_bucket", [])
        if _match(lab, labels) and "le" in lab
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return None


def histogram_quantile(samples: Samples, name: str, q: float, **labels: str) -> float | None:
    """Quantile ``q`` of a histogram summed over every series matching ``labels``,
    interpolated linearly within its bucket (as PromQL's ``histogram_quantile``); the
    highest finite bound when it falls in the ``+Inf`` bucket; ``None`` when empty."""
    cum: dict[float, float] = {}
    for lab, v in samples.get(f"{name}_bucket", []):
        if "le" in lab and _match(lab, labels):
            le = float(lab["le"])
            cum[le] = cum.get(le, 0.0) + v
    buckets = sorted(cum.items())
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (target - below) / (count - below)
        lower, below = le, count
    return lower


def histogram_mean(samples: Samples, name: str, **labels: str) -> float | None:
    """Mean of a histogram's observations (``_sum / _count``) over matching series."""
    n = total(samples, f"{name}_count", **labels)
    return total(samples, f"{name}_sum", **labels) / n if n > 0 else None


def _match(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())
