"""The sink's window of feature-log records in flight, over producer doubles.

The doubles hold what is produced until the test acknowledges or refuses it; like
librdkafka, a refused record stays in the producer's length until a poll serves its
report. The sink's own thread is kept from counting (an hour between counts), so each
count here is the one under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from streamlearn.serving import sink as sink_module
from streamlearn.serving.sink import KafkaSink
from streamlearn.streams.contracts import PredictionReply
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics


class _Message:
    def __init__(self, key: str) -> None:
        self._key = key

    def topic(self) -> str:
        return "feature-log"

    def key(self) -> bytes:
        return self._key.encode()


class _Producer:
    def __init__(self, on_delivery: Callable[[Any, Any], None]) -> None:
        self.on_delivery = on_delivery
        self.produced: list[str] = []
        self.unacknowledged: list[str] = []
        self.reports: list[str] = []  # refusals not yet served by a poll

    def produce(self, topic: str, value: bytes, key: str, headers: Any = None) -> None:
        self.produced.append(key)
        self.unacknowledged.append(key)

    def __len__(self) -> int:
        return len(self.unacknowledged) + len(self.reports)

    def acknowledge(self, n: int) -> None:
        del self.unacknowledged[:n]

    def refuse(self, n: int) -> None:
        self.reports += self.unacknowledged[:n]
        del self.unacknowledged[:n]

    def poll(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for key in reports:
            self.on_delivery("refused", _Message(key))
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return len(self)


class _Record:
    """What the sink reads of a feature-log record."""

    def __init__(self, n: int) -> None:
        self.user_id = f"u{n}"

    def encode(self) -> bytes:
        return b"{}"


def _outcome(outcome: str) -> float:
    got = REGISTRY.get_sample_value("streamlearn_feature_log_records_total", {"outcome": outcome})
    return got or 0.0


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KafkaSink, _Producer]]:
    made: list[_Producer] = []

    def make(kafka: KafkaConfig, **extra: Any) -> _Producer:
        made.append(_Producer(extra["on_delivery"]))
        return made[-1]

    monkeypatch.setattr(sink_module, "make_producer", make)
    monkeypatch.setattr(sink_module, "_COUNT_S", 3600.0)
    got = KafkaSink(KafkaConfig("127.0.0.1:1"), Topics("t."), window=3)
    log_producer = next(p for p in made if p.on_delivery == got._failed)
    yield got, log_producer
    got.close(timeout_s=1.0)


def _log(sink: KafkaSink, *ns: int) -> None:
    for n in ns:
        reply = PredictionReply(f"r{n}", "feed", 1, [0.5])
        sink.log_prediction(reply, _Record(n))  # type: ignore[arg-type]


def test_a_full_window_is_counted_again_before_a_record_is_dropped(
    sink: tuple[KafkaSink, _Producer],
) -> None:
    s, producer = sink
    dropped, acknowledged = _outcome("dropped"), _outcome("acknowledged")
    _log(s, 0, 1, 2)
    assert s.in_flight == 3
    producer.acknowledge(3)  # the broker acknowledged them since the last count
    _log(s, 3)
    assert producer.produced == ["u0", "u1", "u2", "u3"] and s.in_flight == 1
    assert _outcome("dropped") == dropped and _outcome("acknowledged") == acknowledged + 3
    _log(s, 4, 5, 6)  # three truly unacknowledged: the last is dropped
    assert producer.produced[-1] == "u5" and s.in_flight == 3
    assert _outcome("dropped") == dropped + 1


def test_a_refused_record_is_not_counted_as_acknowledged(
    sink: tuple[KafkaSink, _Producer],
) -> None:
    s, producer = sink
    failed, acknowledged = _outcome("failed"), _outcome("acknowledged")
    _log(s, 0, 1, 2)
    producer.refuse(1)
    producer.acknowledge(2)
    _log(s, 3)  # the window looks full: the refusal's report is served, then counted
    assert _outcome("failed") == failed + 1 and _outcome("acknowledged") == acknowledged + 2
    assert s.in_flight == 1 and producer.produced[-1] == "u3"
