"""What a trainer rank learned since the last sync round: its report to rank 0.

With several ranks (``streamlearn.streams.learning.ranks``) only rank 0 keeps the model's
figures and publishes, so every rank — rank 0 too — collects per learned micro-batch what
those figures need (:class:`RoundBuffer`): each example's label, its predict-before-learn
score, the version that served it and its score, the shadow's, its id, and the positives'
times (freshness); plus what it adds to the snapshot's counters (examples learned, their
fingerprints, duplicates dropped). At a round each rank sends :meth:`RoundBuffer.report`
with the offsets it has passed, and starts a new buffer. Rank 0 then counts every rank's
examples as one trainer counts its own (``OnlineTrainer._merge``): the progressive
metrics, per-version evaluation and freshness of a model trained by ``N`` ranks are
those of all its examples.

A report costs ~64 bytes per example learned (eight numbers), however large the model.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from streamlearn.streams.learning.examples import Examples

#: Raw rows a rank sends with each report (rank 0 checks ONNX parity on rows).
REPORT_ROWS: Final = 16
_SCORES: Final = ("y", "p", "served_version", "served_score", "shadow_version", "shadow_score")


class RoundBuffer:
    """One rank's learning since the last round (module docstring)."""

    def __init__(self) -> None:
        self._scores: dict[str, list[np.ndarray]] = {k: [] for k in _SCORES}
        self._ids: list[np.ndarray] = []
        self._positives: list[np.ndarray] = []
        self.learned = 0
        self.fingerprint = 0
        self.ids_fingerprint = 0
        self.duplicates = 0
        self._last: Examples | None = None

    def add(self, chunk: Examples, p: np.ndarray, fingerprint: int, learned_at: float) -> None:
        """A micro-batch learned: its scores ``p`` and its fingerprint's share."""
        for k, v in (
            ("y", chunk.y),
            ("p", p),
            ("served_version", chunk.served_version),
            ("served_score", chunk.served_score),
            ("shadow_version", chunk.shadow_version),
            ("shadow_score", chunk.shadow_score),
        ):
            self._scores[k].append(v)
        self._ids.append(chunk.ids)
        pos = np.flatnonzero((chunk.y > 0) & ~np.isnan(chunk.label_ts))
        if len(pos):
            joined = np.where(np.isnan(chunk.joined_at[pos]), learned_at, chunk.joined_at[pos])
            self._positives.append(
                np.column_stack([chunk.label_ts[pos], joined, np.full(len(pos), learned_at)])
            )
        self.learned += len(chunk)
        self.fingerprint = (self.fingerprint + fingerprint) % (1 << 64)
        self.ids_fingerprint = (self.ids_fingerprint + int(chunk.ids.sum(dtype=np.uint64))) % (
            1 << 64
        )
        self._last = chunk

    def report(self, offsets: dict[str, int], **extra: Any) -> dict[str, Any]:
        """What rank 0 needs of this round (``offsets``: this rank's partitions')."""
        rows = self._last.rows(max(0, len(self._last) - REPORT_ROWS)) if self._last else []
        return {
            "offsets": offsets,
            "learned": self.learned,
            "fingerprint": str(self.fingerprint),
            "ids_fingerprint": str(self.ids_fingerprint),
            "duplicates": self.duplicates,
            "ids": _cat(self._ids, np.uint64),
            "positives": np.concatenate(self._positives) if self._positives else np.zeros((0, 3)),
            "rows": rows,
            **{
                k: _cat(v, np.int64 if k.endswith("version") else np.float64)
                for k, v in self._scores.items()
            },
            **extra,
        }


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def scores(reports: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every report's scores as one array per field, in rank order."""
    return {k: np.concatenate([r[k] for r in reports]) for k in _SCORES}
