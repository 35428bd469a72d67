"""Announcing stage changes on Kafka.

The stage changes themselves (promote, rollback, reject, the history) are in
:mod:`streamlearn.models.stages`, where serving's admin endpoints reach them too.
"""

from __future__ import annotations

from streamlearn.models.registry import FileRegistry
from streamlearn.models.stages import StageChange
from streamlearn.streams.contracts import encode, stage_update
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics


def announce(config: KafkaConfig, registry: FileRegistry, change: StageChange) -> None:
    """Publish a ``ModelUpdate(kind="stage")`` for ``change`` on the model-updates topic.

    Serving also polls the registry's stages, so this only makes the switch faster.
    """
    topic = Topics(config.topic_prefix).model_updates
    ensure_topics(config, [topic], partitions=1)
    metrics = registry.get(change.model, change.version).metadata.get("metrics") or {}
    update = stage_update(change.model, change.version, change.stage, change.previous, metrics)
    producer = make_producer(config)
    produce(producer, topic, encode(update), change.model)
    flush(producer, 10.0)
