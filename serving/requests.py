"""The request-topic path: answer prediction requests that arrive on Kafka.

A consumer in group ``serving`` reads ``prediction-requests`` and answers each request on
the ``predictions`` topic, feature-logging it like an HTTP request. Which model answers:

1. the model the record's ``model`` header names;
2. else the model that ranks the request's ``surface`` (``streamlearn.streams.catalog.models``:
   each surface is ranked by one model of the project).

A request that cannot be answered gets an error reply on ``predictions``
(:class:`~streamlearn.streams.contracts.PredictionError`: the message, the HTTP status the
same request gets, the models served here): a model that is not served here (404,
whether a header names it or the surface leads to it), a model with no version loaded yet
(503: the requests for the other models in the batch are answered at once, never held
back), a request the model cannot take (400). A record that is not a request at all
(it cannot be decoded, so has no ``request_id`` to answer) goes to
``prediction-requests.dlq`` with the reason in its headers. Offsets are committed after
the batch's replies are acknowledged (at-least-once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Message, TopicPartition

from streamlearn.serving.errors import ModelNotFound, ServingError
from streamlearn.serving.metrics import REQUEST_ERRORS
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import KafkaSink
from streamlearn.streams.catalog.models import ModelCatalog
from streamlearn.streams.contracts import PredictionError, PredictionRequest, decode_request
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.clients import Follower, make_consumer
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
    models: ModelCatalog,
) -> str:
    """The model that answers ``request`` (see the module docstring); :class:`ModelNotFound`
    naming the served models when that model is not served here."""
    for key, value in headers or ():
        if key == MODEL_HEADER and value is not None:
            named = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if named not in served:
                raise ModelNotFound(
                    f"expected the {MODEL_HEADER!r} header to name a model served here, one "
                    f"of {list(served)}, got {named[:80]!r}"
                )
            return named
    by_surface = models.for_surface(request.surface)
    if by_surface is None or by_surface not in served:
        ranked = "no model" if by_surface is None else f"model {by_surface!r}"
        raise ModelNotFound(
            f"expected a {MODEL_HEADER!r} header naming one of {list(served)} (the models "
            f"served here), or a surface one of them ranks; got no header and surface "
            f"{request.surface!r}, ranked by {ranked}"
        )
    return by_surface


class RequestConsumer:
    """Answers the request topic with the model each request is routed to (:func:`route`);
    replies go through ``sink``."""

    def __init__(
        self,
        service: PredictionService,
        sink: KafkaSink,
        kafka: KafkaConfig,
        models: ModelCatalog,
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
            consumer = make_consumer(self._kafka, GROUP_ID, **self._kafka.quiet_fetch())
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
        served = self.service.models
        for msg in msgs:
            try:
                request = decode_request(msg.value())
            except ContractError as exc:
                self._dlq.send(msg, exc.reason, str(exc))
                continue
            headers = msg.headers()
            if isinstance(headers, dict):
                headers = list(headers.items())
            try:
                model = route(request, headers, served, self.models)
                reply, record = self.service.predict(model, request)
            except ServingError as exc:
                REQUEST_ERRORS.labels(str(exc.status)).inc()
                error = PredictionError(request.request_id, str(exc), exc.status, list(served))
                self._sink.log_error(error, request.user_id)
                continue
            self._sink.log_prediction(reply, record)
        self._sink.flush()
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
