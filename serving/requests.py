"""The request-topic path: answer prediction requests that arrive on Kafka.

A consumer in group ``serving`` reads ``prediction-requests`` and answers each request on
the ``predictions`` topic, feature-logging it like an HTTP request. Which model answers:

1. the model the record's ``model`` header names (it must be one this server serves);
2. else the model that ranks the request's ``surface`` (``streamlearn.streams.catalog.models``:
   ``feed`` → ``feed``, ``ads`` → ``ads``), when this server serves it;
3. else the first served model.

A malformed request, or one naming a model not served here, goes to
``prediction-requests.dlq`` with the reason in its headers. Offsets are committed after
the batch's replies are acknowledged (at-least-once). While a model the batch needs has
no version loaded yet, the batch waits unanswered and uncommitted rather than fail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Message, TopicPartition

from streamlearn.serving.errors import BadRequest
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import KafkaSink
from streamlearn.streams.catalog.models import MODELS, ModelCatalog
from streamlearn.streams.contracts import PredictionRequest, decode_request
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.clients import Follower, flush, make_consumer
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.dead_letters import DeadLetters
from streamlearn.streams.kafka.topics import Topics

log = logging.getLogger(__name__)

GROUP_ID: Final = "serving"
_BATCH: Final = 500
_POLL_S: Final = 0.1


#: The Kafka header that names the model a request is for.
MODEL_HEADER: Final = "model"


def route(
    request: PredictionRequest,
    headers: Sequence[tuple[str, str | bytes | None]] | None,
    served: Sequence[str],
    models: ModelCatalog = MODELS,
) -> str:
    """The model that answers ``request`` (see the module docstring); :class:`BadRequest`
    when its header names a model not in ``served``."""
    for key, value in headers or ():
        if key == MODEL_HEADER and value is not None:
            named = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if named not in served:
                raise BadRequest(
                    f"expected the {MODEL_HEADER!r} header to name a model among "
                    f"{list(served)}, got {named[:80]!r}"
                )
            return named
    by_surface = models.for_surface(request.surface)
    return by_surface if by_surface is not None and by_surface in served else served[0]


class RequestConsumer:
    """Answers the request topic with the model each request is routed to (:func:`route`);
    replies go through ``sink``."""

    def __init__(
        self,
        service: PredictionService,
        sink: KafkaSink,
        kafka: KafkaConfig,
        models: ModelCatalog = MODELS,
    ) -> None:
        self.service = service
        self.models = models
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
            log.info(
                "answering topic=%s group=%s with models=%s",
                self.topic,
                GROUP_ID,
                list(self.service.models),
            )
        return self

    def _answer(self, msgs: Sequence[Message]) -> None:
        assert self._follower is not None
        stopping = self._follower.stopping
        routed: list[tuple[Message, PredictionRequest, str]] = []
        for msg in msgs:
            try:
                request = decode_request(msg.value())
                headers = msg.headers()
                if isinstance(headers, dict):
                    headers = list(headers.items())
                routed.append((msg, request, route(request, headers, self.service.models)))
            except ContractError as exc:
                self._dlq.send(msg, exc.reason, str(exc))
            except BadRequest as exc:
                self._dlq.send(msg, "invalid_value", str(exc))
        needed = {model for _, _, model in routed}
        while any(self.service.version(m) is None for m in needed):  # wait, do not fail
            if stopping.wait(_POLL_S):
                return  # unanswered and uncommitted: answered after the restart
        for msg, request, model in routed:
            try:
                reply, record = self.service.predict(model, request)
            except BadRequest as exc:
                self._dlq.send(msg, "invalid_value", str(exc))
                continue
            self._sink.log_prediction(reply, record)
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
