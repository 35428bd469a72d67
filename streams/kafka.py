"""Thin confluent-kafka wrappers: producers, consumers and the dead-letter writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer

from streams.config import KafkaConfig
from streams.errors import KafkaError
from streams.metrics import DLQ_EVENTS
from streams.topics import Topics

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection retries and the like) go through Python logging
#: instead of straight to stderr.
_CLIENT_LOG = logging.getLogger("librdkafka")


def _log_delivery_error(err: Any, msg: Message) -> None:
    if err is not None:
        log.error("delivery failed topic=%s: %s", msg.topic(), err)


def make_producer(config: KafkaConfig, **extra: Any) -> Producer:
    """An idempotent producer; delivery errors are logged."""
    conf = config.producer_conf(**extra)
    conf.setdefault("error_cb", lambda e: log.warning("producer error: %s", e))
    conf.setdefault("on_delivery", _log_delivery_error)
    conf.setdefault("logger", _CLIENT_LOG)
    return Producer(conf)


def make_consumer(config: KafkaConfig, group_id: str, **extra: Any) -> Consumer:
    """A consumer in ``group_id`` with manual commits and fast group joins."""
    conf = config.consumer_conf(group_id, **extra)
    conf.setdefault("error_cb", lambda e: log.warning("consumer error: %s", e))
    conf.setdefault("logger", _CLIENT_LOG)
    return Consumer(conf)


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: str | bytes | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    on_delivery: Callable[[Any, Message], None] = _log_delivery_error,
) -> None:
    """Produce one record, serving delivery callbacks when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def flush(producer: Producer, timeout_s: float = 30.0) -> None:
    """Wait until every produced record is acknowledged, or raise ``KafkaError``."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise KafkaError(f"{remaining} records not acknowledged within {timeout_s}s")


class DeadLetters:
    """Sends a record that could not be processed to ``<topic>.dlq`` with its error.

    Headers: ``error`` (message), ``error.reason`` (short code), ``source.topic``,
    ``source.partition``, ``source.offset``. The original key and value are kept.
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def send(self, msg: Message, reason: str, error: str) -> None:
        """Dead-letter ``msg`` and count it under ``reason``."""
        topic = msg.topic() or "?"
        headers: list[tuple[str, str | bytes | None]] = [
            ("error", error.encode()[:4096]),
            ("error.reason", reason.encode()),
            ("source.topic", topic.encode()),
            ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()),
        ]
        produce(self._producer, Topics.dlq(topic), msg.value(), msg.key(), headers)
        DLQ_EVENTS.labels(topic, reason).inc()
        log.warning(
            "dead-lettered topic=%s partition=%s offset=%s reason=%s: %s",
            topic,
            msg.partition(),
            msg.offset(),
            reason,
            error,
        )


def check(msg: Message) -> bool:
    """True for a data message; False for a partition-EOF event; raise on a real error."""
    err = msg.error()
    if err is None:
        return True
    if err.code() == err._PARTITION_EOF:
        return False
    if err.fatal():
        raise KafkaError(f"consume failed: {err}")
    log.warning("consumer error (continuing): %s", err)
    return False


__all__ = [
    "DeadLetters",
    "KafkaException",
    "check",
    "flush",
    "make_consumer",
    "make_producer",
    "produce",
]
