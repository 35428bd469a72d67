"""``streamlearn up --metrics-file F``: every process's metrics over the run, one file.

The file is OpenMetrics text with a timestamp on every sample and the labels
``job="<process>"`` and ``instance="127.0.0.1:<port>"`` added, as Prometheus would have
scraped them with ``compose/prometheus/prometheus.yml``. So the dashboard's and the alert
rules' queries read it unchanged: load it into a Prometheus data directory with
``promtool tsdb create-blocks-from openmetrics F DIR`` and query it (Prometheus' own
page, ``promtool query``), or read the numbers in it directly.

The whole history is kept in memory (one point per process every ``interval_s``, at most
``max_points`` of them, oldest dropped first) and the file is rewritten at each point:
OpenMetrics wants each family's samples together, so it cannot be appended to.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class _Point:
    job: str
    instance: str
    ts: float
    families: list[Metric]


class _Families:
    """A collector over prepared families (what ``generate_latest`` reads)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class MetricsFile:
    """Collects scrapes of the stack's processes and writes them as OpenMetrics."""

    def __init__(self, path: Path, interval_s: float = 5.0, max_points: int = 10_000) -> None:
        self.path = path
        self.interval_s = interval_s
        self._points: deque[_Point] = deque(maxlen=max_points)
        self._next = 0.0

    def due(self, now: float) -> bool:
        """True when ``interval_s`` has passed since the last recorded round."""
        return now >= self._next

    def record(self, now: float, scrapes: dict[str, tuple[int, list[Metric]]]) -> None:
        """One round: ``{job: (port, families)}`` scraped at wall-clock time ``now``."""
        self._next = now + self.interval_s
        for job, (port, families) in scrapes.items():
            if families:
                self._points.append(_Point(job, f"127.0.0.1:{port}", now, families))

    def write(self) -> None:
        """(Re)write the file atomically with every recorded point."""
        text = generate_latest(_Families(self._merged()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, self.path)

    def _merged(self) -> list[Metric]:
        """One family per name over every process and point; each series' points together
        and in time order (a histogram's buckets, count and sum of one point stay together).
        ``_created`` series (when a counter was created) are left out."""
        families: dict[str, Metric] = {}
        series: dict[str, dict[tuple[object, ...], list[Sample]]] = {}
        for point in sorted(self._points, key=lambda p: p.ts):
            extra = {"job": point.job, "instance": point.instance}
            for fam in point.families:
                if fam.name.endswith("_created"):
                    continue
                if fam.name not in families:
                    families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                    series[fam.name] = {}
                for s in fam.samples:
                    if s.name.endswith("_created"):
                        continue
                    labels = {**s.labels, **extra}
                    key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    series[fam.name].setdefault(key, []).append(
                        Sample(s.name, labels, s.value, point.ts)
                    )
        for name, fam in families.items():
            for samples in series[name].values():
                fam.samples.extend(samples)
        return list(families.values())
