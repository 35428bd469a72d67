"""Every learner in the zoo (and the downsampled ads head) passes every check."""

from collections.abc import Callable
from functools import partial

import pytest

from models import checks
from models.protocol import Learner
from models.zoo import available, create


def _make(name: str, negative_rate: float | None, seed: int) -> Learner:
    params = {"num_threads": 1} if name in ("fm", "deep") else {}
    return create(name, checks.CHECK_SPEC, seed=seed, negative_rate=negative_rate, **params)


LEARNERS = [(name, None) for name in available()] + [("ftrl", 0.5), ("deep", 0.5)]


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
