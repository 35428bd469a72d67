"""Every stream processor passes every check of ``streamlearn.streams.testing.checks`` (no
broker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streamlearn.streams.testing import checks
from streamlearn.streams.testing.checks import Scenario
from tests.unit.streams.scenarios import JOINER, SCENARIOS, TOPICS, TRAINER


@pytest.mark.parametrize("check", list(checks.yield_checks()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_processor_passes_check(scenario: Scenario, check: Callable[[Scenario], Any]) -> None:
    check(scenario)


def test_the_trainer_learns_each_example_of_a_crashing_joiner_once() -> None:
    survived = checks.check_learned_once(JOINER, TRAINER.build, TOPICS.training_examples("feed"))
    assert set(survived) == set(checks.STEPS)
