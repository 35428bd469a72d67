"""Sweep grids: ``key=v1,v2`` pairs expanded to a bounded list of configurations."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from offline.errors import FlowError


def parse_value(text: str) -> Any:
    """A param value from the command line: JSON when it parses (``0.1``, ``true``), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise FlowError(f"expected key=value, got {pair!r}")
    return key.strip(), value.strip()


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (one value each, commas kept)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, value = _split(pair)
        out[key] = parse_value(value)
    return out


def parse_grid(pairs: Sequence[str] | None) -> dict[str, list[Any]]:
    """``["learner=ftrl,fm", "alpha=0.1,0.5"]`` → ``{"learner": [...], "alpha": [...]}``."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs or []:
        key, text = _split(pair)
        if key in grid:
            raise FlowError(f"expected each grid param once, got {key!r} twice")
        values = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise FlowError(f"expected at least one value for grid param {key!r}, got {pair!r}")
        grid[key] = values
    return grid


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    """Number of configurations of ``grid`` (1 for an empty grid)."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def expand_grid(grid: Mapping[str, Sequence[Any]], max_configs: int) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest; at most ``max_configs`` of them."""
    n = grid_size(grid)
    if n > max_configs:
        raise FlowError(
            f"expected at most {max_configs} configurations (--max-configs), the grid "
            f"{dict(grid)} has {n}"
        )
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
