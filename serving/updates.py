"""Keeps every served model on its registry serving version: hot swaps on updates.

Two triggers, one check. The ``model-updates`` topic (read from its start by a unique
consumer group) says quickly that something changed; polling the registry every
``poll_interval_s`` catches what the topic misses (no broker, a lost announcement, a
stage set by hand). Either way the check is the same: when
``registry.serving_version(model)`` differs from the loaded version, load it. A version
that was rejected is not retried until the serving version changes again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Final

from confluent_kafka import Consumer

from models.errors import ModelError
from serving.errors import SnapshotRejected
from serving.service import PredictionService
from streams.config import KafkaConfig
from streams.contracts import ModelUpdate, decode
from streams.errors import ContractError, StreamsError
from streams.kafka import check, make_consumer
from streams.topics import Topics

log = logging.getLogger(__name__)

_BATCH: Final = 500
_POLL_S: Final = 0.1


class ModelUpdater:
    """Follows the model-updates topic and the registry; swaps sessions in ``service``."""

    def __init__(
        self,
        service: PredictionService,
        kafka: KafkaConfig | None,
        poll_interval_s: float = 2.0,
    ) -> None:
        self.service = service
        self._kafka = kafka
        self.poll_interval_s = poll_interval_s
        self._rejected: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, model: str) -> bool:
        """Load ``model``'s serving version if it is not the one loaded; True on a swap."""
        try:
            mv = self.service.registry.serving_version(model)
        except ModelError as exc:
            log.error("cannot read the registry for model=%s: %s", model, exc)
            return False
        if mv is None or mv.version == self.service.version(model):
            return False
        if self._rejected.get(model) == mv.version:
            return False
        try:
            self.service.load(mv)
        except SnapshotRejected:
            self._rejected[model] = mv.version
            return False
        return True

    def check_all(self) -> None:
        """:meth:`check` every served model."""
        for model in self.service.models:
            self.check(model)

    def start(self) -> ModelUpdater:
        """Load the current serving versions now, then follow updates in a thread."""
        if self._thread is None:
            self.check_all()
            consumer = None
            if self._kafka is not None:
                topic = Topics(self._kafka.topic_prefix).model_updates
                group = f"serving-updates-{uuid.uuid4().hex[:12]}"
                consumer = make_consumer(self._kafka, group, **{"auto.offset.reset": "earliest"})
                consumer.subscribe([topic])
                log.info("following topic=%s group=%s", topic, group)
            self._thread = threading.Thread(
                target=self._run, args=(consumer,), name="model-updates", daemon=True
            )
            self._thread.start()
        return self

    def _run(self, consumer: Consumer | None) -> None:
        next_poll = time.monotonic() + self.poll_interval_s
        try:
            while not self._stop.is_set():
                if consumer is None:
                    self._stop.wait(_POLL_S)
                else:
                    self._follow(consumer)
                if time.monotonic() >= next_poll:
                    self.check_all()
                    next_poll = time.monotonic() + self.poll_interval_s
        finally:
            if consumer is not None:
                consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        try:
            msgs = [m for m in consumer.consume(_BATCH, _POLL_S) if check(m)]
        except StreamsError as exc:
            log.error("model-updates consumer error: %s", exc)
            self._stop.wait(1.0)
            return
        announced: set[str] = set()
        for m in msgs:
            try:
                announced.add(decode(ModelUpdate, m.value()).model)
            except ContractError as exc:
                log.warning(
                    "skipped model update topic=%s partition=%s offset=%s: %s",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    exc,
                )
        for model in announced.intersection(self.service.models):
            self.check(model)

    def stop(self) -> None:
        """Stop following updates."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
