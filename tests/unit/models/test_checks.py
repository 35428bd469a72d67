"""Every learner in the zoo (and the downsampled ads head) passes every check."""

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest

from streamlearn.models import checks
from streamlearn.models.learners.downsampled import Downsampled
from streamlearn.models.learners.ftrl import FTRL
from streamlearn.models.protocol import Learner
from streamlearn.models.zoo import available, create


def _make(name: str, negative_rate: float | None, seed: int) -> Learner:
    params = {"num_threads": 1} if name == "deep" else {}
    return create(name, checks.CHECK_SPEC, seed=seed, negative_rate=negative_rate, **params)


LEARNERS = [(name, None) for name in available()] + [("ftrl", 0.5), ("fm", 0.5), ("deep", 0.5)]


@pytest.mark.parametrize("check", list(checks.yield_checks()), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("name", "negative_rate"), LEARNERS, ids=[f"{n}-ds{r}" if r else n for n, r in LEARNERS]
)
def test_learner_passes_check(
    name: str, negative_rate: float | None, check: Callable[[checks.MakeLearner], None]
) -> None:
    check(partial(_make, name, negative_rate))


def test_zoo_covers_the_required_learners() -> None:
    assert {"ftrl", "fm", "deep", "river-lr"} <= set(available())


class _MutatingFTRL(FTRL):
    """Broken on purpose: scribbles on its input."""

    def predict_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        val[:] = 0.0
        return super().predict_featurised(idx, val)


class _UncorrectedDownsampled(Downsampled):
    """Broken on purpose: its ONNX graph forgets the probability correction."""

    def to_onnx(self) -> bytes:
        return self.inner.to_onnx()


def test_checks_catch_broken_learners() -> None:
    with pytest.raises(AssertionError, match="mutated"):
        checks.check_inputs_not_mutated(lambda seed: _MutatingFTRL(checks.CHECK_SPEC, seed=seed))
    with pytest.raises(AssertionError):
        checks.check_onnx_parity(
            lambda seed: _UncorrectedDownsampled(FTRL(checks.CHECK_SPEC), 0.2, seed=seed)
        )
