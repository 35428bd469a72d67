"""The request-topic path: answer prediction requests that arrive on Kafka.

A consumer in group ``serving`` reads ``prediction-requests`` and answers each request
with the model given (the first served model by default) on the ``predictions`` topic,
feature-logging it like an HTTP request. A malformed request goes to
``prediction-requests.dlq`` with the reason in its headers. Offsets are committed after
the batch's replies are acknowledged (at-least-once). While the model has no version
loaded yet, nothing is consumed: requests wait on the topic rather than fail.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from serving.errors import BadRequest
from serving.publish import KafkaSink
from serving.service import PredictionService
from streams.config import KafkaConfig
from streams.contracts import decode_request
from streams.errors import ContractError, StreamsError
from streams.kafka import DeadLetters, check, flush, make_consumer
from streams.topics import Topics

log = logging.getLogger(__name__)

GROUP_ID: Final = "serving"
_BATCH: Final = 500
_POLL_S: Final = 0.1


class RequestConsumer:
    """Answers the request topic with ``model``; replies go through ``sink``."""

    def __init__(
        self, service: PredictionService, sink: KafkaSink, kafka: KafkaConfig, model: str
    ) -> None:
        self.service = service
        self.model = model
        self._sink = sink
        self._kafka = kafka
        self.topic = Topics(kafka.topic_prefix).prediction_requests
        self._dlq = DeadLetters(sink.producer)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RequestConsumer:
        """Join group ``serving`` and answer requests in a thread."""
        if self._thread is None:
            consumer = make_consumer(self._kafka, GROUP_ID)
            consumer.subscribe([self.topic])
            self._thread = threading.Thread(
                target=self._run, args=(consumer,), name="prediction-requests", daemon=True
            )
            self._thread.start()
            log.info("answering topic=%s group=%s with model=%s", self.topic, GROUP_ID, self.model)
        return self

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                if self.service.version(self.model) is None:
                    self._stop.wait(_POLL_S)
                    continue
                try:
                    msgs = consumer.consume(_BATCH, _POLL_S)
                    self._answer(consumer, [m for m in msgs if check(m)])
                except (StreamsError, KafkaException) as exc:
                    log.error("request consumer error on topic=%s: %s", self.topic, exc)
                    self._stop.wait(1.0)
        finally:
            consumer.close()

    def _answer(self, consumer: Consumer, msgs: list[Message]) -> None:
        if not msgs:
            return
        for msg in msgs:
            try:
                request = decode_request(msg.value())
                reply, record = self.service.predict(self.model, request)
            except ContractError as exc:
                self._dlq.send(msg, exc.reason, str(exc))
                continue
            except BadRequest as exc:
                self._dlq.send(msg, "invalid_value", str(exc))
                continue
            self._sink.publish(reply, record)
        flush(self._sink.producer)
        next_offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            offset = msg.offset()
            if offset is not None:
                next_offsets[(msg.topic() or self.topic, msg.partition() or 0)] = offset + 1
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=False,
        )

    def stop(self) -> None:
        """Finish the current batch and leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
