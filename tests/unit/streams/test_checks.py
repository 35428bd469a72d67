"""Every stream processor passes every check of ``streamlearn.streams.testing.checks`` (no
broker)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamlearn.streams.testing import checks
from streamlearn.streams.testing.checks import Scenario
from tests.unit.streams.scenarios import FEATURES, JOINER, SCENARIOS, TOPICS, TRAINER


@pytest.mark.parametrize("check", list(checks.yield_checks()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_processor_passes_check(scenario: Scenario, check: Callable[[Scenario], Any]) -> None:
    check(scenario)


def test_the_trainer_learns_each_example_of_a_crashing_joiner_once() -> None:
    survived = checks.check_learned_once(JOINER, TRAINER.build, TOPICS.training_examples("feed"))
    assert set(survived) == set(checks.STEPS)


CONSUMED = ("applied", "dead_lettered", "skipped")


@pytest.mark.parametrize("scenario", [FEATURES, JOINER], ids=lambda s: s.name)
def test_committed_counts_add_up_to_the_offsets_and_the_outputs(scenario: Scenario) -> None:
    """Every consumed record is counted once in the committed state: applied,
    dead-lettered or skipped; the joiner's emitted examples are the topic's."""
    with tempfile.TemporaryDirectory() as d:
        _, got = checks.clean_run(scenario, Path(d))
    emitted = 0
    for name, (_, offsets, counts) in got["stores"].items():
        for topic, off in offsets.items():
            consumed = sum(counts.get(f"{o}:{topic}", 0) for o in CONSUMED)
            assert consumed == off, (name, topic, counts)
        emitted += counts.get(f"emitted:{TOPICS.training_examples('feed')}", 0)
    applied = sum(c.get(f"applied:{t}", 0) for _, o, c in got["stores"].values() for t in o)
    dead = sum(c.get(f"dead_lettered:{t}", 0) for _, o, c in got["stores"].values() for t in o)
    assert applied > 0
    assert dead == len(got["dead letters"]) > 0
    if scenario is JOINER:
        assert emitted == len(got["examples"]) > 0
