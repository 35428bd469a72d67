"""The commit sequence's ownership lease, without a broker: when it verifies, what a
freeze or a failed delivery does, and that slow work is not mistaken for a freeze."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from streamlearn.streams.errors import Fenced, KafkaError
from streamlearn.streams.runtime.checkpoint import Checkpoint
from streamlearn.streams.runtime.microbatch import RuntimeConfig
from streamlearn.streams.runtime.processor import Decoder, Output, Record, TopicPartitionKey
from streamlearn.streams.testing.checks import StillTime
from streamlearn.streams.testing.memory import MemoryBroker

TP = ("in", 0)


class _Proc:
    """What every processor has; records its commits."""

    name = "proc"
    dead_letter_inputs = None

    def __init__(self) -> None:
        self.committed: list[dict[TopicPartitionKey, int]] = []
        self.discarded = 0

    def inputs(self) -> Mapping[str, Decoder]:
        return {"in": bytes}

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return dict.fromkeys(partitions, 0)

    def revoke(self, partitions: list[TopicPartitionKey]) -> None: ...

    def process(self, records: list[Record]) -> list[Output]:
        return []

    def tick(self, now: float) -> list[Output]:
        return []

    def finish(self) -> list[Output]:
        return []

    def close(self) -> None: ...


class _Store(_Proc):
    """A store processor."""

    def tally(self, counts: Mapping[tuple[str, int, str], int]) -> None: ...

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        return [Output("changelog", b"c", "k", 0)]

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self.committed.append(dict(offsets))

    def discard(self) -> None:
        self.discarded += 1


class _Snapshots(_Proc):
    """A snapshot processor whose snapshot takes ``slow_s`` of ``time``."""

    def __init__(self, time: StillTime, slow_s: float) -> None:
        super().__init__()
        self.time = time
        self.slow_s = slow_s

    def advance(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        self.time.advance(self.slow_s)
        self.committed.append(dict(offsets))
        return [Output("updates", b"v2", "m")]


def _checkpoint(
    proc: object, broker: MemoryBroker, time: StillTime, answers: list[object]
) -> tuple[Checkpoint, list[dict[TopicPartitionKey, int]]]:
    """A checkpoint whose ``verify`` gives ``answers`` in turn (True, False, or a
    ``Fenced`` to raise), recording what it was asked."""
    asked: list[dict[TopicPartitionKey, int]] = []

    def verify(offsets: dict[TopicPartitionKey, int]) -> bool:
        asked.append(dict(offsets))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    cp = Checkpoint(
        proc,  # type: ignore[arg-type]
        broker.producer(),
        verify=verify,
        lease_s=1.5,
        monotonic=time,
    )
    return cp, asked


def _interval(cp: Checkpoint, n: int, outputs: int = 3) -> None:
    cp.store_offsets({TP: n}, {TP: n + 1})
    cp.add([Output("out", f"{n}/{i}".encode(), "k") for i in range(outputs)])


def test_ownership_is_verified_again_once_half_the_lease_is_gone() -> None:
    broker, time, proc = MemoryBroker(partitions=1), StillTime(), _Store()
    cp, asked = _checkpoint(proc, broker, time, [True, True])
    _interval(cp, 0)
    cp.commit()
    time.advance(0.5)
    _interval(cp, 1)
    cp.commit()  # a third of the lease gone: not asked again
    time.advance(0.5)
    _interval(cp, 2)
    cp.commit()
    assert asked == [{TP: 1}, {TP: 3}]
    assert proc.committed == [{TP: 1}, {TP: 2}, {TP: 3}]
    assert len(broker.messages("out")) == 9


def test_a_lease_running_out_in_slow_work_is_renewed_not_taken_for_a_freeze() -> None:
    broker, time, proc = MemoryBroker(partitions=1), StillTime(), _Store()
    cp, asked = _checkpoint(proc, broker, time, [True] * 9)
    _interval(cp, 0, outputs=40)
    real = cp.producer.produce

    def slow(*args: object, **kw: object) -> None:
        real(*args, **kw)  # type: ignore[arg-type]
        time.advance(0.1)  # 40 records, 4 s: past the lease, but never a stall

    cp.producer.produce = slow  # type: ignore[method-assign]
    cp.commit()
    assert len(asked) == 4 and proc.committed == [{TP: 1}]  # at 0 s, 1.5, 3.0 and 4.0
    assert len(broker.messages("out")) == 40


def test_no_answer_postpones_the_commit_and_writes_nothing() -> None:
    broker, time, proc = MemoryBroker(partitions=1), StillTime(), _Store()
    cp, _ = _checkpoint(proc, broker, time, [False, True])
    _interval(cp, 0)
    assert cp.commit() is None
    assert not proc.committed and not broker.messages("out") and not cp.empty
    assert cp.commit() is not None
    assert proc.committed == [{TP: 1}] and len(broker.messages("out")) == 3


def test_a_freeze_while_producing_drops_what_is_queued_and_stops() -> None:
    broker, time, proc = MemoryBroker(partitions=1), StillTime(), _Store()
    cp, _ = _checkpoint(proc, broker, time, [True, Fenced("evicted")])
    _interval(cp, 0, outputs=5)
    real = cp.producer.produce
    sent = []

    def produce(*args: object, **kw: object) -> None:
        real(*args, **kw)  # type: ignore[arg-type]
        sent.append(1)
        if len(sent) == 2:
            time.advance(30.0)  # frozen past the session time-out after the 2nd record

    cp.producer.produce = produce  # type: ignore[method-assign]
    with pytest.raises(Fenced):
        cp.commit()
    cp.producer.flush()
    assert len(sent) == 2 and not broker.messages("out") and not proc.committed


def test_an_undelivered_record_fails_the_commit() -> None:
    broker, time, proc = MemoryBroker(partitions=1), StillTime(), _Store()
    cp, _ = _checkpoint(proc, broker, time, [True])
    _interval(cp, 0)
    flush = cp.producer.flush

    def expire_then_flush(timeout: float = 0.0) -> int:
        broker.freeze()  # the records queued so far expire
        return flush(timeout)

    cp.producer.flush = expire_then_flush  # type: ignore[method-assign]
    with pytest.raises(KafkaError, match="not delivered"):
        cp.commit()
    assert not proc.committed


def test_a_snapshot_slower_than_the_lease_is_announced_after_a_new_check() -> None:
    broker, time = MemoryBroker(partitions=1), StillTime()
    proc = _Snapshots(time, slow_s=5.0)
    cp, asked = _checkpoint(proc, broker, time, [True, True])
    _interval(cp, 0, outputs=0)
    cp.commit()
    assert len(asked) == 2 and proc.committed == [{TP: 1}]
    assert [m.value() for m in broker.messages("updates")] == [b"v2"]


def test_the_lease_and_message_time_out_fit_in_the_session() -> None:
    lease, timeout = RuntimeConfig("g").fencing()
    assert (lease, timeout) == pytest.approx((1.5, 3.0))
    assert lease + timeout < 6.0 - 1.0
    with pytest.raises(ValueError, match="must exceed"):
        RuntimeConfig("g", session_timeout_s=1.0).fencing()


def test_an_evicted_member_is_refused_and_rejoins(tmp_path: Path) -> None:
    from confluent_kafka import KafkaException, TopicPartition

    broker = MemoryBroker(partitions=2)
    broker.create_topics(["in"])
    c = broker.consumer("g")
    revoked: list[int] = []
    c.subscribe(["in"], on_revoke=lambda _c, tps: revoked.extend(tp.partition for tp in tps))
    c.consume(1, 0)
    assert c.commit(offsets=[TopicPartition("in", 0, 0)], asynchronous=False) is not None
    broker.freeze()
    with pytest.raises(KafkaException, match="UNKNOWN_MEMBER_ID"):
        c.commit(offsets=[TopicPartition("in", 0, 0)], asynchronous=False)
    c.consume(1, 0)  # revokes what it had, rejoins
    assert sorted(revoked) == [0, 1] and {tp.partition for tp in c.assignment()} == {0, 1}
    assert c.commit(offsets=[TopicPartition("in", 0, 0)], asynchronous=False) is not None
