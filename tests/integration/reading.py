"""Reading topics back in integration tests."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message

from streamlearn.streams.kafka.clients import KafkaCluster, follow, reader
from streamlearn.streams.kafka.config import KafkaConfig


def read_all(
    kafka: KafkaConfig, topic: str, idle_s: float = 2.0, timeout_s: float = 60.0
) -> list[Message]:
    """Every record of ``topic`` (its ``kafka.partitions`` partitions), from the beginning
    until ``idle_s`` pass without data; bounded by ``timeout_s``."""
    out: list[Message] = []

    def keep(msgs: Sequence[Message]) -> None:
        out.extend(msgs)

    consumer = reader(KafkaCluster(kafka), topic, range(kafka.partitions))
    try:
        follow(consumer, keep, idle_s=idle_s, timeout_s=timeout_s, poll_s=0.2, what=topic)
    finally:
        consumer.close()
    return out
