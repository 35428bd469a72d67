"""Negative downsampling with the probability correction (a calibrated head, as pricing needs).

Training keeps every positive and each negative with probability ``rate``; the inner
model then estimates ``p'`` on the sampled distribution, and predictions are corrected
back to the true one: ``p = p' / (p' + (1 − p') / rate)`` (He et al., ADKDD 2014).
The ONNX graph carries the same correction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from streamlearn.models.errors import ModelError, SnapshotError
from streamlearn.models.learners.base import FeaturisedLearner
from streamlearn.models.onnx_export import with_downsampling_correction
from streamlearn.models.sync import sync_rules


def correct(p: np.ndarray, rate: float) -> np.ndarray:
    """Map probabilities learnt on downsampled negatives back to the full stream."""
    return p / (p + (1.0 - p) / rate)


class Downsampled(FeaturisedLearner):
    """Wraps a learner: trains it on all positives and a ``rate`` sample of negatives."""

    def __init__(self, inner: FeaturisedLearner, rate: float, seed: int = 0) -> None:
        if not 0.0 < rate <= 1.0:
            raise ModelError(f"negative sampling rate must be in (0, 1], got {rate!r}")
        super().__init__(inner.spec, seed)
        self.inner = inner
        self.rate = float(rate)
        self.name = inner.name
        self.sequential = inner.sequential
        self._rng = np.random.default_rng(seed)

    def params(self) -> dict[str, Any]:
        """The inner learner's hyper-parameters plus ``negative_rate``."""
        return {**self.inner.params(), "negative_rate": self.rate}

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """Corrected probabilities (float64 ``(n,)``)."""
        return correct(self.inner.predict_featurised(idx, val), self.rate)

    def _learn(self, idx: np.ndarray, val: np.ndarray, y: np.ndarray) -> np.ndarray:
        keep = (y > 0) | (self._rng.random(y.shape[0]) < self.rate)
        return correct(self.inner.predict_learn_kept(idx, val, y, keep), self.rate)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The inner learner's arrays."""
        return self.inner.state_arrays()

    def sync_rules(self) -> dict[str, str]:
        """The inner learner's rules (``streamlearn.models.sync``)."""
        return sync_rules(self.inner)

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """The inner learner's arrays."""
        self.inner.load_state_arrays(arrays)

    def state_extra(self) -> dict[str, Any]:
        """The sampler's random state and the inner learner's extras and count."""
        return {
            "sampler": self._rng.bit_generator.state,
            "inner_examples_seen": self.inner.examples_seen,
            "inner": self.inner.state_extra(),
        }

    def load_state_extra(self, extra: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_extra`."""
        try:
            self._rng.bit_generator.state = dict(extra["sampler"])
            self.inner.examples_seen = int(extra["inner_examples_seen"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"downsampled learner state is not usable: {exc!r}") from exc
        self.inner.load_state_extra(extra.get("inner") or {})

    def state_header(self) -> dict[str, Any]:
        """The inner learner's header, with the rate and this wrapper's seed."""
        return {
            **self.inner.state_header(),
            "negative_rate": self.rate,
            "wrapper_seed": self.seed,
            "examples_seen": self.examples_seen,
            "extra": self.state_extra(),
        }

    def to_onnx(self) -> bytes:
        """The inner graph followed by the correction."""
        return with_downsampling_correction(self.inner.to_onnx(), self.rate)
