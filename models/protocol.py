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

    def predict_proba_one(self, x: Row) -> float: ...

    def predict_proba_many(self, xs: Sequence[Row]) -> np.ndarray: ...

    def learn_one(self, x: Row, y: float) -> None: ...

    def learn_many(self, xs: Sequence[Row], ys: Sequence[float] | np.ndarray) -> None: ...

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray: ...

    def learn_featurised(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> None: ...

    def predict_learn_featurised(
        self, idx: np.ndarray, val: np.ndarray, y: np.ndarray
    ) -> np.ndarray: ...

    def snapshot(self, state: bool = True) -> Snapshot: ...
