"""The metrics that compose/'s Grafana dashboards and Prometheus alert rules query, and a
check of them against what the processes of a running loop export.

Queries are parsed with a real PromQL parser (``promql-parser``), so every selector is
found wherever it sits (inside ``rate``, ``histogram_quantile``, binary operators, …).
Grafana's ``$__…`` interval variables are replaced by a duration before parsing, and the
dashboards' template variables (``$model``, ``$surface``: every value, when all are
selected) by ``.*``; each template variable's own query is checked too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import promql_parser
import yaml
from prometheus_client.metrics_core import Metric

COMPOSE = Path(__file__).resolve().parents[1] / "compose"
DASHBOARDS = COMPOSE / "grafana" / "dashboards"
ALERTS = COMPOSE / "prometheus" / "alerts.yml"

#: Series Prometheus makes itself, not the processes.
PROMETHEUS_OWN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"})

#: The sample names a family of each type exposes (histogram: ``_bucket/_sum/_count``).
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


@dataclass(frozen=True)
class Selector:
    """One vector selector of a query: the metric name and its label matchers."""

    where: str
    name: str
    #: (label, op, value) with op one of ``=``, ``!=``, ``=~``, ``!~``
    matchers: tuple[tuple[str, str, str], ...]


def queries() -> list[tuple[str, str]]:
    """``(where, expr)`` for every dashboard target and every alert rule."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for var in dashboard.get("templating", {}).get("list", []):
            found = _LABEL_VALUES.match(var["definition"])
            assert found, f"{path.name}: variable {var['name']}: expected label_values(...)"
            out.append((f"{path.name}: variable {var['name']}", found.group(1)))
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"{ALERTS.name}: {rule.get('alert') or rule['record']}", rule["expr"]))
    return out


_GRAFANA_VAR = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__\w+\}")
#: A dashboard's template variable in a label matcher (all values selected).
_TEMPLATE_VAR = re.compile(r"\$(?!__)\w+")
#: A template variable's query: ``label_values(<selector>, <label>)``.
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*\w+\)$")
_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def selectors(where: str, expr: str) -> list[Selector]:
    """Every vector selector in ``expr`` (raises on a query that does not parse)."""
    tree = promql_parser.parse(_TEMPLATE_VAR.sub(".*", _GRAFANA_VAR.sub("5m", expr)))
    found: list[Selector] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = []
            name = node.name
            for m in node.matchers.matchers:
                op = _OPS[str(m.op).rsplit(".", 1)[-1]]
                if m.name == "__name__" and op == "=":
                    name = m.value
                else:
                    matchers.append((m.name, op, m.value))
            if not name:
                raise ValueError(f"{where}: a selector without a metric name in {expr!r}")
            found.append(Selector(where, name, tuple(matchers)))
        return True

    promql_parser.walk(tree, visit)
    return found


def exported_names(families: list[Metric]) -> set[str]:
    """Every sample name the families can expose, declared ones without samples too."""
    names = set()
    for fam in families:
        names.update(fam.name + s for s in _SUFFIXES.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


def _matches(labels: dict[str, str], matchers: tuple[tuple[str, str, str], ...]) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


@dataclass(frozen=True)
class Report:
    """What a loop's metrics lack for the dashboards and alerts."""

    #: selectors whose metric name no process exports (a drifted or misspelt name)
    unknown: list[Selector]
    #: selectors whose name has samples, none of which match the label matchers
    unmatched: list[Selector]
    #: names that are declared but had no sample in the run
    unsampled: set[str]


def check(families: list[Metric]) -> Report:
    """Check every dashboard and alert selector against ``families`` (all processes)."""
    names = exported_names(families)
    samples: dict[str, list[dict[str, str]]] = {}
    for fam in families:
        for s in fam.samples:
            samples.setdefault(s.name, []).append(dict(s.labels))
    unknown, unmatched, unsampled = [], [], set()
    for where, expr in queries():
        for sel in selectors(where, expr):
            if sel.name in PROMETHEUS_OWN:
                continue
            if sel.name not in names:
                unknown.append(sel)
            elif sel.name not in samples:
                unsampled.add(sel.name)
            elif not any(_matches(lab, sel.matchers) for lab in samples[sel.name]):
                unmatched.append(sel)
    return Report(unknown, unmatched, unsampled)
