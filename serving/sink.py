"""Where served predictions go on Kafka: the feature log and the predictions topic.

Producing never blocks a request, nor takes its thread's time: a served request's two
records are handed to the sink's thread (a deque append), which encodes them and queues
them in librdkafka in batches (``produce_batch``: one call per topic for what came in
since the last), about every 2 ms while requests come, and serves the delivery
callbacks; librdkafka sends them in batches of up to ``SINK_LINGER_MS`` (20 ms). The
request topic's consumer flushes (:meth:`KafkaSink.flush`) before it commits.

What a crash of serving can lose is bounded and counted: at most ``window`` feature-log
records are *in flight* (answered, not yet acknowledged by the broker) at any time.
``streamlearn_feature_log_in_flight`` is that number now (what a kill -9 would lose),
and ``streamlearn_feature_log_records_total{outcome}`` counts every record:
``acknowledged``, ``failed`` (the broker refused it: logged) or ``dropped`` (the window
was full — the broker has not acknowledged ``window`` records, e.g. it is down — or the
local queue was: the request is answered all the same, and a warning says how many were
dropped). A request's impressions never become training examples without its feature-log
record, so this bound is what the loop can lose to a serving crash (the chaos test
checks it from the topics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from confluent_kafka import Message

from streamlearn.serving.candidates import FeatureLog
from streamlearn.serving.metrics import FEATURE_LOG_IN_FLIGHT, FEATURE_LOG_RECORDS, PUBLISH_DROPPED
from streamlearn.streams.contracts import (
    ModelUpdate,
    PredictionError,
    PredictionReply,
    encode,
)
from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import flush, make_producer
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives every served prediction with the features it scored."""

    def log_prediction(self, reply: PredictionReply, record: FeatureLog) -> None:
        """Hand off one served request; must not block on the network."""
        ...


#: Feature-log records in flight (answered, not yet acknowledged) at most: what a crash of
#: serving can lose. Far above what a healthy broker leaves in flight (requests per second
#: × the acknowledgement time: tens), so only a broker that stops acknowledging reaches it.
FEATURE_LOG_WINDOW: Final = 1000
_DROP_LOG_EVERY_S: Final = 10.0
#: How long librdkafka gathers the sink's records into a batch.
SINK_LINGER_MS: Final = 20
#: While requests come, the sink's thread hands them to librdkafka about this often.
_BUSY_POLL_S: Final = 0.002
#: ... and goes on polling that often for this long after the last one (waking it costs
#: the request's thread a syscall).
_BUSY_S: Final = 0.02
#: Idle, it serves delivery callbacks at least this often.
_IDLE_WAIT_S: Final = 0.05


class KafkaSink:
    """Produces the feature-log record and the reply, both keyed by user id; at most
    ``window`` feature-log records in flight (module docstring)."""

    def __init__(self, kafka: KafkaConfig, topics: Topics, window: int = FEATURE_LOG_WINDOW):
        if window < 1:
            raise ValueError(f"expected a feature-log window >= 1, got {window}")
        # a delivery report for every record: acknowledgements free the window; batches
        # of 20 ms, not 5: ~25% less CPU per request (bench/bench_feature_log.py), and the
        # feature log is read seconds later (the request topic's replies are flushed)
        self.producer = make_producer(
            kafka, **{"delivery.report.only.error": False, "linger.ms": SINK_LINGER_MS}
        )
        self.window = window
        self._in_flight = 0
        self._lock = threading.Lock()
        self._dropped_unlogged = 0
        self._drop_logged_at = 0.0
        self._feature_log = topics.feature_log
        self._predictions = topics.predictions
        self._model_updates = topics.model_updates
        FEATURE_LOG_IN_FLIGHT.set_function(lambda: self._in_flight)
        # served requests not yet handed to librdkafka: (reply, record or None, key)
        self._queue: deque[tuple[PredictionReply, FeatureLog | None, str]] = deque()
        self._producing = threading.Lock()
        self._idle = False  # the thread waits for work (set ``_wake`` to wake it)
        self._wake = threading.Event()
        self._acknowledged = FEATURE_LOG_RECORDS.labels("acknowledged")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-producer", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Feature-log records answered and not yet acknowledged."""
        return self._in_flight

    def log_prediction(self, reply: PredictionReply, record: FeatureLog) -> None:
        """Hand both records to the sink's thread; never waits. The feature-log record is
        dropped (and counted) when ``window`` are already in flight."""
        with self._lock:
            room = self._in_flight < self.window
            if room:
                self._in_flight += 1
        if not room:
            self._dropped()
        self._queue.append((reply, record if room else None, record.user_id))
        if self._idle:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Queue in librdkafka what was handed over, then wait until the broker has
        acknowledged everything (``streamlearn.streams.kafka.clients.flush``: raises when
        it has not within ``timeout_s``)."""
        self._produce_queued()
        flush(self.producer, timeout_s)

    def _produce_queued(self) -> None:
        """Encode what was handed over since the last call and queue it in librdkafka,
        one batch per topic, in the order it came (one caller at a time)."""
        with self._producing:
            self._produce_taken()

    def _produce_taken(self) -> None:
        queue, taken = self._queue, []
        while queue:
            taken.append(queue.popleft())
        logs = [
            {"value": record.encode(), "key": key} for _, record, key in taken if record is not None
        ]
        replies = [{"value": encode(reply), "key": key} for reply, _, key in taken]
        if logs:
            self._batch(self._feature_log, logs, self._acked)
            for failed in (m for m in logs if "_error" in m):
                with self._lock:
                    self._in_flight -= 1
                self._dropped()
                log.error("cannot queue a feature-log record: %s", failed["_error"])
        self._batch(self._predictions, replies, _delivered)

    def _batch(
        self, topic: str, messages: list[dict[str, Any]], on_delivery: Callable[..., None]
    ) -> None:
        queued = self.producer.produce_batch(topic, messages, on_delivery=on_delivery)
        if queued < len(messages) and topic != self._feature_log:
            PUBLISH_DROPPED.labels(topic).inc(len(messages) - queued)
            log.error("producer queue full: dropped %d record(s) for topic=%s",
                      len(messages) - queued, topic)  # fmt: skip

    def _acked(self, err: Any, msg: Message) -> None:
        with self._lock:
            self._in_flight -= 1
        if err is None:
            self._acknowledged.inc()
        else:
            FEATURE_LOG_RECORDS.labels("failed").inc()
            _delivered(err, msg)

    def _dropped(self) -> None:
        FEATURE_LOG_RECORDS.labels("dropped").inc()
        now = time.monotonic()
        with self._lock:
            self._dropped_unlogged += 1
            if now - self._drop_logged_at < _DROP_LOG_EVERY_S:
                return
            n, self._dropped_unlogged, self._drop_logged_at = self._dropped_unlogged, 0, now
        log.error(
            "dropped %d feature-log record(s): %d were in flight, not yet acknowledged by the "
            "broker (slow or down); their requests were answered, their impressions will not "
            "become training examples",
            n,
            self.window,
        )

    def log_error(self, error: PredictionError, key: str) -> None:
        """Queue the error reply to a request from the request topic on ``predictions``
        (header ``error.status``, so a reader tells it from a reply without decoding),
        after the replies handed over before it."""
        self._produce_queued()
        status: list[tuple[str, str | bytes | None]] = [
            ("error.status", str(error.status).encode())
        ]
        self._send(self._predictions, encode(error), key, headers=status)

    def announce(self, update: ModelUpdate) -> None:
        """Queue a model update (a stage change made through serving) on ``model-updates``."""
        self._send(self._model_updates, encode(update), update.model)

    def _send(
        self,
        topic: str,
        value: bytes,
        key: str,
        on_delivery: Callable[[Any, Message], None] | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> bool:
        try:
            self.producer.produce(
                topic, value, key, headers=headers, on_delivery=on_delivery or _delivered
            )
        except BufferError:
            PUBLISH_DROPPED.labels(topic).inc()
            log.error("producer queue full: dropped a record for topic=%s key=%s", topic, key)
            return False
        return True

    def _run(self) -> None:
        """Produce what is handed over (about every 2 ms while requests come) and
        serve delivery callbacks; idle (nothing for ``_BUSY_S``), wait to be woken (or
        50 ms: callbacks)."""
        busy_until = 0.0
        while not self._stop.is_set():
            if self._queue:
                self._produce_queued()
                busy_until = time.monotonic() + _BUSY_S
            if time.monotonic() < busy_until:
                self.producer.poll(_BUSY_POLL_S)
                continue
            self._idle = True
            if not self._queue:
                self._wake.wait(_IDLE_WAIT_S)
            self._idle = False
            self._wake.clear()
            self.producer.poll(0)
        self._produce_queued()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the delivery thread, flush what is queued and close the producer.

        Closing explicitly (not when the last reference goes) matters: the HTTP server's
        objects form reference cycles that keep the sink reachable until a garbage
        collection, and an open producer keeps its broker connections.
        """
        self._stop.set()
        self._wake.set()
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
