"""Sweep grids (``{param: [values]}``, parsed from ``key=v1,v2`` flags by
``streamlearn.cli.options.parse_grid``) expanded to a bounded list of configurations."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from streamlearn.offline.errors import FlowError


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
