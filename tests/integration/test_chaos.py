"""The whole loop under chaos: ``up --workers 2 --serving-replicas 2`` while features,
joiners, the trainer and serving are killed with SIGKILL, one worker's store is deleted
and the broker is paused for 10 s (SIGSTOP); the topics, read back with aiokafka, say
nothing was lost (``chaos.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlearn.streams.kafka.broker import EmbeddedBroker
from tests.integration import chaos

pytestmark = pytest.mark.integration


def test_kills_a_lost_store_and_a_paused_broker_lose_nothing(tmp_path: Path) -> None:
    # a broker of its own: it is paused, which would stall every other test's
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        outcome = chaos.run(broker, tmp_path / "var", chaos.Plan())
    # problems() holds every count that is not exact, and any example emitted twice
    assert outcome.problems() == [], outcome.notes
    assert outcome.duplicate_examples == {m: 0 for m in outcome.snapshot}
    assert outcome.kills == len(chaos.Plan().kills)
    truth = outcome.truth
    assert truth.events > 500 and truth.users_checked > 20
    # every malformed event dead-lettered (duplicates are possible only for an interval
    # a kill interrupted; they name the same source offset)
    assert len(truth.malformed) == chaos.Plan().malformed_events
    assert set(truth.dead_lettered) == truth.malformed
    # the clients came back after the pause: events kept flowing and were all processed
    assert truth.events + len(truth.malformed) > outcome.activity_after_pause > 0
    # both serving replicas answered
    by_replica = outcome.summary["predictions_by_replica"]
    assert set(by_replica) == {"serving-1", "serving-2"}
    assert all(n > 0 for n in by_replica.values()), by_replica
    assert outcome.examples_in_topic["feed"] > 0
