"""Reading topics back in integration tests."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition

from streams.config import KafkaConfig


def read_all(
    kafka: KafkaConfig, topic: str, idle_s: float = 2.0, timeout_s: float = 60.0
) -> list[Message]:
    """Every record of ``topic`` (its ``kafka.partitions`` partitions), from the beginning
    until ``idle_s`` pass without data; bounded by ``timeout_s``."""
    c = Consumer(kafka.consumer_conf(f"read-{uuid.uuid4().hex}"))
    c.assign([TopicPartition(topic, p, 0) for p in range(kafka.partitions)])
    out: list[Message] = []
    last = time.monotonic()
    deadline = last + timeout_s
    while time.monotonic() - last < idle_s and time.monotonic() < deadline:
        for m in c.consume(1000, 0.2):
            if m.error() is None:
                out.append(m)
                last = time.monotonic()
    c.close()
    return out
