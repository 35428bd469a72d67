"""``follow`` hands a batch over as soon as its first message is there."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message

from streamlearn.streams.kafka.clients import follow


class _Librdkafka:
    """Consumes like librdkafka: ``consume(n, timeout)`` returns at once only when ``n``
    messages are there, else after waiting out ``timeout`` (counted, not slept)."""

    def __init__(self, n: int) -> None:
        self.queue = [Message(topic="t", partition=0, offset=i, value=b"v") for i in range(n)]
        self.waited = 0.0

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if len(self.queue) < num_messages:
            self.waited += timeout
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out


def test_a_batch_is_handed_over_without_waiting_out_the_poll() -> None:
    consumer = _Librdkafka(3)
    got: list[list[int]] = []

    def handler(msgs: Sequence[Message]) -> bool:
        got.append([m.offset() or 0 for m in msgs])
        return True

    assert follow(consumer, handler, batch_size=500, poll_s=0.5)  # type: ignore[arg-type]
    assert got == [[0, 1, 2]]  # one batch, whole
    assert consumer.waited == 0.0  # before: 0.5 s, the poll's whole timeout


def test_batches_are_capped_at_batch_size() -> None:
    consumer = _Librdkafka(5)
    got: list[int] = []

    def handler(msgs: Sequence[Message]) -> bool:
        got.append(len(msgs))
        return sum(got) == 5

    assert follow(consumer, handler, batch_size=2, poll_s=0.5)  # type: ignore[arg-type]
    assert got == [2, 2, 1]
