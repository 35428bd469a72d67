"""Where served predictions go on Kafka: the feature log and the predictions topic.

Producing never blocks a request: records are queued in librdkafka and sent in the
background (a thread serves delivery callbacks); when the local queue is full the
record is dropped, counted and logged rather than making the caller wait.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from confluent_kafka import Message, Producer

from streamlearn.serving.metrics import PUBLISH_DROPPED
from streamlearn.streams.contracts import (
    FeatureLogRecord,
    ModelUpdate,
    PredictionError,
    PredictionReply,
    encode,
)
from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import flush
from streamlearn.streams.kafka.topics import Topics

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives every served prediction with the features it scored."""

    def log_prediction(self, reply: PredictionReply, record: FeatureLogRecord) -> None:
        """Hand off one served request; must not block on the network."""
        ...


class KafkaSink:
    """Produces the feature-log record and the reply, both keyed by user id."""

    def __init__(self, producer: Producer, topics: Topics) -> None:
        self.producer = producer
        self._feature_log = topics.feature_log
        self._predictions = topics.predictions
        self._model_updates = topics.model_updates
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="serving-producer", daemon=True)
        self._thread.start()

    def log_prediction(self, reply: PredictionReply, record: FeatureLogRecord) -> None:
        """Queue both records; never waits for the broker."""
        self._send(self._feature_log, encode(record), record.user_id)
        self._send(self._predictions, encode(reply), record.user_id)

    def log_error(self, error: PredictionError, key: str) -> None:
        """Queue the error reply to a request from the request topic on ``predictions``
        (header ``error.status``, so a reader tells it from a reply without decoding)."""
        self._send(
            self._predictions, encode(error), key, [("error.status", str(error.status).encode())]
        )

    def announce(self, update: ModelUpdate) -> None:
        """Queue a model update (a stage change made through serving) on ``model-updates``."""
        self._send(self._model_updates, encode(update), update.model)

    def _send(
        self,
        topic: str,
        value: bytes,
        key: str,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        try:
            self.producer.produce(topic, value, key, headers=headers, on_delivery=_delivered)
        except BufferError:
            PUBLISH_DROPPED.labels(topic).inc()
            log.error("producer queue full: dropped a record for topic=%s key=%s", topic, key)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the delivery thread, flush what is queued and close the producer.

        Closing explicitly (not when the last reference goes) matters: the HTTP server's
        objects form reference cycles that keep the sink reachable until a garbage
        collection, and an open producer keeps its broker connections.
        """
        self._stop.set()
        self._thread.join(timeout=5.0)
        try:
            flush(self.producer, timeout_s)
        except StreamsError as exc:
            log.error("closing the serving producer: %s", exc)
        close = getattr(self.producer, "close", None)  # older clients: freed by the GC
        if close is not None:
            close()


def _delivered(err: Any, msg: Message) -> None:
    if err is not None:
        log.error("delivery failed topic=%s key=%r: %s", msg.topic(), msg.key(), err)
