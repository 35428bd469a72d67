"""Dead letters: a record that cannot be processed goes to ``<topic>.dlq`` with its error.

Headers: ``error`` (message, at most 4 KiB), ``error.reason`` (a short code, as
:class:`streamlearn.streams.errors.ContractError` gives it), ``source.topic``, ``source.partition``,
``source.offset``; the original key and value are kept. ``streamlearn_dlq_events_total``
counts them; it lives here, not in :mod:`streamlearn.streams.runtime.metrics`, so only the
processes that dead-letter (the processors, serving's request topic) export it.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message
from prometheus_client import Counter

from streamlearn.streams.kafka.clients import Headers, ProducerLike, produce
from streamlearn.streams.kafka.topics import Topics

log = logging.getLogger(__name__)

DLQ_EVENTS = Counter(
    "streamlearn_dlq_events_total",
    "Records sent to a dead-letter topic, per source topic and reason.",
    ["topic", "reason"],
)


def dead_letter_headers(msg: Message, reason: str, error: str) -> Headers:
    """A dead letter's headers: ``error``, ``error.reason``, ``source.*`` coordinates."""
    return [
        ("error", error.encode()[:4096]),
        ("error.reason", reason.encode()),
        ("source.topic", (msg.topic() or "?").encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]


class DeadLetters:
    """Sends a record that could not be processed to ``<topic>.dlq`` with its error."""

    def __init__(self, producer: ProducerLike) -> None:
        self._producer = producer

    def send(self, msg: Message, reason: str, error: str) -> None:
        """Dead-letter ``msg`` and count it under ``reason``."""
        topic = msg.topic() or "?"
        headers = dead_letter_headers(msg, reason, error)
        produce(self._producer, Topics.dlq(topic), msg.value(), msg.key(), headers)
        note_dead_letter(msg, reason, error)


def note_dead_letter(msg: Message, reason: str, error: str) -> None:
    """Count and log one dead letter."""
    DLQ_EVENTS.labels(msg.topic() or "?", reason).inc()
    log.warning(
        "dead-lettered topic=%s partition=%s offset=%s reason=%s: %s",
        msg.topic(),
        msg.partition(),
        msg.offset(),
        reason,
        error,
    )
