"""The one protocol every online learner follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from streamlearn.models.features import Featuriser
from streamlearn.models.snapshot import Snapshot

Row = Mapping[str, object]


@runtime_checkable
class Learner(Protocol):
    """An online binary classifier over hashed features.

    ``*_one``/``*_many`` take raw rows and featurise them with ``featuriser``. The
    ``predict_proba_*`` names are river's, but they return P(y=1) itself (a float, or a
    float64 array), not river's ``{False: …, True: …}`` dict;
    ``*_featurised`` take the featuriser's ``(idx int64 [n, K], val float32 [n, K])``
    arrays directly (the trainer's and serving's fast path). Probabilities are float64.
    ``predict_learn_featurised`` is progressive validation in one pass: the returned
    probabilities are those *before* the update. Seeds are passed to constructors;
    no learner touches global random state.
    """

    name: str
    featuriser: Featuriser
    examples_seen: int

    def predict_proba_one(self, x: Row) -> float:
        """P(y=1) for one raw row (feature name → value)."""
        ...

    def predict_proba_many(self, xs: Sequence[Row]) -> np.ndarray:
        """P(y=1) for each raw row, as a float64 array of ``len(xs)``."""
        ...

    def learn_one(self, x: Row, y: float) -> None:
        """Update on one raw row with its label (0 or 1)."""
        ...

    def learn_many(self, xs: Sequence[Row], ys: Sequence[float] | np.ndarray) -> None:
        """Update on the raw rows in order, each with its label: the same model as
        :meth:`learn_one` on each in turn."""
        ...

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """P(y=1) for each featurised row.

        Parameters
        ----------
        idx, val
            The featuriser's arrays for ``n`` rows: slot indices (int64, ``[n, K]``) and
            their values (float32, ``[n, K]``).
        """
        ...

    def learn_featurised(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> None:
        """Update on the featurised rows in order, with labels ``y`` (``[n]``, 0 or 1)."""
        ...

    def predict_learn_featurised(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray
    ) -> np.ndarray:
        """Progressive validation in one pass: each row's P(y=1) *before* the model learns
        it, then the update, row by row in order."""
        ...

    def snapshot(self, state: bool = True) -> Snapshot:
        """The model as it is now: its ONNX graph, its state as data (what a trainer
        resumes from) and metadata. ``state=False``: a serving-only snapshot, the graph
        without the state."""
        ...
