"""A sweep's results: a CSV table, a Markdown table and a PNG plot comparing configurations."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamlearn.models.extras import require

_TRAILING = ("seconds", "error", "run")


def columns(rows: Sequence[Mapping[str, Any]], grid_keys: Sequence[str]) -> list[str]:
    """config, the grid params, status, the metrics (first-seen order), seconds, error, run."""
    cols = ["config", *grid_keys, "status"]
    for row in rows:
        cols += [k for k in row if k not in cols and k not in _TRAILING]
    return cols + [k for k in _TRAILING if any(k in r for r in rows)]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def write_csv(rows: Sequence[Mapping[str, Any]], cols: Sequence[str], path: Path) -> None:
    """All columns, raw values."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(cols), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: Sequence[Mapping[str, Any]], cols: Sequence[str], title: str) -> str:
    """A Markdown table (no ``run`` column; errors shortened)."""
    shown = [c for c in cols if c != "run"]
    lines = [f"# {title}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|")[:120] for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(row: Mapping[str, Any], grid_keys: Sequence[str]) -> str:
    parts = [f"{k}={row.get(k)}" for k in grid_keys]
    return f"#{row['config']} " + (" ".join(parts) if parts else "")


def _number(value: Any) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    )


def _compact(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.4g}"


def write_plot(
    rows: Sequence[Mapping[str, Any]],
    grid_keys: Sequence[str],
    metrics: Sequence[str],
    path: Path,
    title: str,
) -> None:
    """One dot chart per metric, a row per configuration (axes fit the values, so small
    differences show); a failed configuration is marked ``failed``."""
    # imported here: matplotlib costs ~0.5 s, and every CLI command imports this module
    require("flow", "the sweep plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    metrics = list(metrics) or ["seconds"]
    labels = [_label(r, grid_keys) for r in rows]
    positions = list(range(len(rows)))
    fig = Figure(figsize=(4.5 * len(metrics) + 2, max(2.5, 0.45 * len(rows) + 1.2)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        values = [_number(r.get(metric)) for r in rows]
        ax.hlines(positions, 0, 1, transform=ax.get_yaxis_transform(), colors="#dddddd", lw=0.8)
        ax.plot(values, positions, "o", color="#4878a8", markersize=7)
        finite = [v for v in values if not math.isnan(v)]
        for pos, v, row in zip(positions, values, rows, strict=True):
            if math.isnan(v):
                text = "failed" if row.get("status") != "ok" else "n/a"
                ax.text(0.5, pos, text, transform=ax.get_yaxis_transform(), ha="center",
                        va="center", fontsize=8, color="#b03030")  # fmt: skip
            else:
                ax.annotate(_compact(v), (v, pos), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=8)  # fmt: skip
        if finite:
            lo, hi = min(finite), max(finite)
            pad = (hi - lo) * 0.15 or abs(hi) * 0.05 or 1.0
            ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _compact(x)))
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_results(
    out: Path,
    rows: Sequence[Mapping[str, Any]],
    grid_keys: Sequence[str],
    metrics: Sequence[str],
    title: str,
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cols = columns(rows, grid_keys)
    paths = {"csv": out / "results.csv", "markdown": out / "results.md", "png": out / "results.png"}
    write_csv(rows, cols, paths["csv"])
    paths["markdown"].write_text(markdown(rows, cols, title))
    write_plot(rows, grid_keys, metrics, paths["png"], title)
    return paths
