"""Training examples as columns: what the online trainer holds between decoding and learning.

:class:`Examples` keeps one array (or tuple of raw values) per column, in arrival order;
the trainer queues them, learns them in micro-batches (``slice``/``concat``) and drops
those of a revoked partition (``select``). Every field is sliced and concatenated alike,
so a column added here (an example id, say) travels with its examples without more code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A column of raw feature values: a list (``None`` where absent), or a float64 array
#: for a feature only ever read as a number.
Column = list[Any] | np.ndarray


@dataclass
class Examples:
    """Decoded, featurised examples of one input topic, in arrival order (module
    docstring)."""

    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    #: the examples' ids (``streamlearn.streams.learning.dedup.example_ids``, uint64)
    ids: np.ndarray
    idx: np.ndarray  # int64 (n, K)
    val: np.ndarray  # float32 (n, K)
    y: np.ndarray  # float64
    served_version: np.ndarray  # int64, 0: not served (an impression of a replayed log)
    served_score: np.ndarray  # float64, NaN: not served
    shadow_version: np.ndarray  # int64, 0: no shadow scored it
    shadow_score: np.ndarray  # float64
    label_ts: np.ndarray  # float64, NaN: none
    joined_at: np.ndarray  # float64 (the record's Kafka timestamp), NaN: none
    #: the raw feature values by name: parity rows, and a candidate arm with other features
    raw: dict[str, Column]

    def __len__(self) -> int:
        return len(self.offsets)

    def _map(self, fn: Callable[[Column], Column]) -> Examples:
        return Examples(
            **{  # type: ignore[arg-type]
                f.name: (
                    {k: fn(c) for k, c in v.items()}
                    if isinstance(v := getattr(self, f.name), dict)
                    else fn(v)
                )
                for f in dataclasses.fields(self)
            }
        )

    def slice(self, start: int, stop: int) -> Examples:
        """Examples ``start`` to ``stop`` (exclusive)."""
        return self._map(lambda c: c[start:stop])

    def select(self, keep: np.ndarray) -> Examples:
        """The examples at positions ``keep`` (sorted)."""
        picks = keep.tolist()
        return self._map(lambda c: c[keep] if isinstance(c, np.ndarray) else [c[i] for i in picks])

    @staticmethod
    def concat(blocks: Sequence[Examples]) -> Examples:
        """One block of ``blocks`` in order."""
        if len(blocks) == 1:
            return blocks[0]
        out: dict[str, Any] = {}
        for f in dataclasses.fields(Examples):
            parts = [getattr(b, f.name) for b in blocks]
            if isinstance(parts[0], dict):
                out[f.name] = {k: _concat([p[k] for p in parts]) for k in parts[0]}
            else:
                out[f.name] = np.concatenate(parts)
        return Examples(**out)

    def rows(self, start: int = 0) -> list[dict[str, Any]]:
        """The raw feature rows from ``start`` on, as dicts (absent features left out)."""
        names = list(self.raw)
        columns = [
            c[start:].tolist() if isinstance(c, np.ndarray) else c[start:]
            for c in self.raw.values()
        ]
        return [
            {k: v for k, v in zip(names, vals, strict=True) if v is not None}
            for vals in zip(*columns, strict=True)
        ]


def _concat(parts: list[Column]) -> Column:
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return [v for p in parts for v in (p.tolist() if isinstance(p, np.ndarray) else p)]


def optional_column(values: list[Any], dtype: type, missing: float) -> np.ndarray:
    """A column that may hold ``None`` (shadow fields, served fields of replayed
    examples): ``missing`` where ``None``."""
    if values.count(None) == len(values):
        return np.full(len(values), missing, dtype=dtype)
    return np.array([missing if v is None else v for v in values], dtype=dtype)
