"""The request-topic path: answer prediction requests that arrive on Kafka.

A consumer in group ``serving`` reads ``prediction-requests`` and answers each request
with the model given (the first served model by default) on the ``predictions`` topic,
feature-logging it like an HTTP request. A malformed request goes to
``prediction-requests.dlq`` with the reason in its headers. Offsets are committed after
the batch's replies are acknowledged (at-least-once). While the model has no version
loaded yet, a batch waits unanswered and uncommitted rather than fail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Message, TopicPartition

from serving.errors import BadRequest
from serving.publish import KafkaSink
from serving.service import PredictionService
from streams.config import KafkaConfig
from streams.contracts import decode_request
from streams.errors import ContractError
from streams.kafka import DeadLetters, Follower, flush, make_consumer
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
        self._follower: Follower | None = None

    def start(self) -> RequestConsumer:
        """Join group ``serving`` and answer requests in a thread."""
        if self._follower is None:
            consumer = make_consumer(self._kafka, GROUP_ID)
            consumer.subscribe([self.topic])
            self._follower = Follower(
                consumer, self._answer, "prediction-requests", batch_size=_BATCH, poll_s=_POLL_S
            ).start()
            log.info("answering topic=%s group=%s with model=%s", self.topic, GROUP_ID, self.model)
        return self

    def _answer(self, msgs: Sequence[Message]) -> None:
        assert self._follower is not None
        stopping = self._follower.stopping
        while self.service.version(self.model) is None:  # wait for a model, do not fail
            if stopping.wait(_POLL_S):
                return  # unanswered and uncommitted: answered after the restart
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
        self._follower.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=False,
        )

    def stop(self) -> None:
        """Finish the current batch and leave the group."""
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
