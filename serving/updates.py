"""Keeps every served model on its registry serving version: hot swaps on updates.

Two triggers, one check. The ``model-updates`` topic (read from its start by a unique
consumer group) says quickly that something changed — within milliseconds: ``follow``
hands over a message as soon as it is fetched, with a 10 ms fetch wait, and a new
version is built and warmed aside while the current one serves, then swapped in by one
reference assignment (``PredictionService.load``); polling the registry every
``poll_interval_s`` catches what the topic misses (no broker, a lost announcement, a
stage set by hand). Either way the check is the same: when
``registry.serving_version(model)`` differs from the loaded version, load it; when
``registry.shadow_version(model)`` (the newest candidate) differs from the shadow, load
it as the shadow (or drop the shadow). A version that was rejected is not retried until
the serving (or shadow) version changes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Message

from streamlearn.models.errors import ModelError
from streamlearn.serving.errors import SnapshotRejected
from streamlearn.serving.service import PredictionService
from streamlearn.streams.contracts import decode_model_update
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.clients import Follower, KafkaCluster, reader
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

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
        self._rejected_shadow: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: Follower | None = None
        self._next_poll = 0.0

    def check(self, model: str) -> bool:
        """Load ``model``'s serving version if it is not the one loaded; True on a swap."""
        try:
            mv = self.service.registry.serving_version(model)
        except ModelError as exc:
            log.error("cannot read the registry for model=%s: %s", model, exc)
            return False
        self._check_shadow(model)
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

    def _check_shadow(self, model: str) -> None:
        try:
            mv = self.service.registry.shadow_version(model)
        except ModelError as exc:
            log.error("cannot read the registry for model=%s: %s", model, exc)
            return
        current = self.service.shadow_version(model)
        if mv is None:
            if current is not None:
                self.service.load_shadow(model, None)
            return
        if mv.version == current or self._rejected_shadow.get(model) == mv.version:
            return
        try:
            self.service.load_shadow(model, mv)
        except SnapshotRejected as exc:
            self._rejected_shadow[model] = mv.version
            log.error("shadow not loaded: %s", exc)

    def check_all(self) -> None:
        """:meth:`check` every served model."""
        for model in self.service.models:
            self.check(model)

    def start(self) -> ModelUpdater:
        """Load the current serving versions now, then follow updates in a thread."""
        if self._follower is None and self._thread is None:
            self.check_all()
            self._next_poll = time.monotonic() + self.poll_interval_s
            if self._kafka is not None:
                topic = Topics(self._kafka.topic_prefix).model_updates
                self._follower = Follower(
                    reader(KafkaCluster(self._kafka), topic, **self._kafka.quiet_fetch()),
                    self._on_updates,
                    "model-updates",
                    batch_size=_BATCH,
                    poll_s=_POLL_S,
                    tick=self._poll_registry,
                ).start()
                log.info("following topic=%s", topic)
            else:  # no broker: the registry alone
                self._thread = threading.Thread(
                    target=self._registry_only, name="model-updates", daemon=True
                )
                self._thread.start()
        return self

    def _poll_registry(self) -> None:
        if time.monotonic() >= self._next_poll:
            self.check_all()
            self._next_poll = time.monotonic() + self.poll_interval_s

    def _registry_only(self) -> None:
        while not self._stop.wait(_POLL_S):
            self._poll_registry()

    def _on_updates(self, msgs: Sequence[Message]) -> None:
        announced: set[str] = set()
        for m in msgs:
            try:
                upd = decode_model_update(m.value())
            except ContractError as exc:
                log.warning(
                    "skipped model update topic=%s partition=%s offset=%s: %s",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    exc,
                )
                continue
            loaded = self.service.version(upd.model)
            if upd.kind == "published" and loaded is not None and upd.version <= loaded:
                continue  # older than what serves (e.g. the topic read from its start)
            announced.add(upd.model)
        for model in announced.intersection(self.service.models):
            self.check(model)

    def stop(self) -> None:
        """Stop following updates."""
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
