"""``KafkaConfig``'s settings for clients."""

from __future__ import annotations

from streamlearn.streams.kafka.config import KafkaConfig


def test_quiet_fetch_waits_longer_than_a_consumer_unless_overridden() -> None:
    cfg = KafkaConfig("127.0.0.1:9092")
    busy = cfg.consumer_conf("g")["fetch.wait.max.ms"]
    quiet = cfg.consumer_conf("g", **cfg.quiet_fetch())["fetch.wait.max.ms"]
    assert (busy, quiet) == (10, 100)
    mine = KafkaConfig("127.0.0.1:9092", client_overrides={"fetch.wait.max.ms": 7})
    assert mine.quiet_fetch() == {}
    assert mine.consumer_conf("g", **mine.quiet_fetch())["fetch.wait.max.ms"] == 7
