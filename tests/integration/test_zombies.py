"""Zombies fenced: ``up --workers 2`` while a feature processor, then a joiner, is frozen
(SIGSTOP) past its 6 s session time-out and thawed (SIGCONT). Its partitions go to the
other worker meanwhile; when it wakes up it must write nothing more for them. Read back
with aiokafka (``chaos.py``): every user's and item's count is exact, no example is
emitted twice, each is learned once, and the summary's figures equal the topics'."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlearn.streams.kafka.broker import EmbeddedBroker
from tests.integration import chaos

pytestmark = pytest.mark.integration

PLAN = chaos.Plan(
    duration_s=55.0,
    serving_replicas=1,
    kills=(),
    delete_stores=(),
    pause_at_s=None,
    malformed_events=10,
    # each waits until the worker holds partitions (a loaded machine starts it slowly)
    freezes=((10.0, "features-1", 14.0), (26.0, "joiner-2", 14.0)),
)


def test_workers_frozen_past_their_session_are_fenced(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        outcome = chaos.run(broker, tmp_path / "var", PLAN)
    assert outcome.problems() == [], outcome.notes
    assert outcome.duplicate_examples == {m: 0 for m in outcome.snapshot}
    assert sum(1 for n in outcome.notes if n.startswith("froze ")) == 2, outcome.notes
    truth = outcome.truth
    assert truth.events > 500 and truth.users_checked > 20
    assert len(truth.malformed) == PLAN.malformed_events == outcome.summary["dlq_events"]
    # each frozen worker was evicted from its group (its partitions went to the other
    # worker, which claimed them); thawed, it was refused (it stopped and was restarted)
    # or found it had lost them (librdkafka revoked them on waking up)
    logs = tmp_path / "var" / "logs"
    for name in ("features-1", "joiner-2"):
        text = (logs / f"{name}.log").read_text()
        assert "no longer counts this worker as a member" in text or "session timed out" in text, (
            f"{name} was never evicted"
        )
