"""Shared fixtures. The embedded broker starts once per test session; if it cannot
start, every test that asks for it fails with the reason (never skips)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A running embedded Tansu broker on a free 127.0.0.1 port."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = EmbeddedBroker(log_path=log_path)
    b.start()  # raises BrokerError: the test errors loudly, it is not skipped
    yield b
    b.stop()


@pytest.fixture
def kafka(broker: EmbeddedBroker) -> KafkaConfig:
    """A KafkaConfig with a topic prefix unique to this test."""
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=4,
    )


@pytest.fixture
def topics(kafka: KafkaConfig) -> Topics:
    """Topic names under this test's unique prefix."""
    return Topics(kafka.topic_prefix)
