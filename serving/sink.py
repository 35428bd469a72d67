"""Where served predictions go on Kafka: the feature log and the predictions topic.

Producing never blocks a request: the request's thread encodes its feature-log record
and queues both records in librdkafka (``produce``: a copy into its queue; ~10 µs of CPU
with the encoding back to back, ~30 µs with cold caches), which sends them in batches of
up to ``SINK_LINGER_MS`` (20 ms). The feature log has a producer of its own, so the
records it has not acknowledged are its queue's length (``len(producer)``): a thread of
the sink counts acknowledgements from that every ``_COUNT_S`` (50 ms) instead of taking
a Python call per record (at 1,000 requests/s, a call per record, two a request, cost
that thread ~15 µs a request; docs/benchmarks.md), and a request that finds the window
full by that count counts again before its record is dropped (at saturation, ~7,000
requests/s, records acknowledged in the last 50 ms filled it). Both producers report
only failures; their reports are served, and acknowledgements counted, under one lock
(a report leaves the queue before its callback counts it as refused).
The request topic's consumer flushes (:meth:`KafkaSink.flush`) before it commits.

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
#: How often the sink's thread counts acknowledged feature-log records (and serves the
#: producers' failure reports).
_COUNT_S: Final = 0.05


class KafkaSink:
    """Produces the feature-log record and the reply, both keyed by user id; at most
    ``window`` feature-log records in flight (module docstring)."""

    def __init__(self, kafka: KafkaConfig, topics: Topics, window: int = FEATURE_LOG_WINDOW):
        if window < 1:
            raise ValueError(f"expected a feature-log window >= 1, got {window}")
        # batches of 20 ms, not 5: ~25% less CPU per request (bench/bench_feature_log.py),
        # and the feature log is read seconds later (the request topic's replies are flushed)
        self.producer = make_producer(
            kafka, **{"linger.ms": SINK_LINGER_MS, "on_delivery": _delivered}
        )
        self._log_producer = make_producer(
            kafka, **{"linger.ms": SINK_LINGER_MS, "on_delivery": self._failed}
        )
        self.window = window
        # re-entered by the failure callback of a poll made under it
        self._lock = threading.RLock()
        # feature-log records: queued, counted as acknowledged, failed; in flight: the rest
        self._produced = 0
        self._acked = 0
        self._refused = 0
        # threads flushing now: their flush serves failure reports, which leave the
        # producer's queue before their callback counts them, so no count meanwhile
        self._flushing = 0
        self._dropped_unlogged = 0
        self._drop_logged_at = 0.0
        self._feature_log = topics.feature_log
        self._predictions = topics.predictions
        self._model_updates = topics.model_updates
        FEATURE_LOG_IN_FLIGHT.set_function(lambda: self.in_flight)
        self._acknowledged = FEATURE_LOG_RECORDS.labels("acknowledged")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-producer", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Feature-log records answered and not yet counted as acknowledged (at most
        ``_COUNT_S`` behind the broker)."""
        return self._produced - self._acked - self._refused

    def log_prediction(self, reply: PredictionReply, record: FeatureLog) -> None:
        """Queue both records in librdkafka; never waits. The feature-log record is
        dropped (and counted) when ``window`` are already in flight."""
        key, value = record.user_id, record.encode()
        with self._lock:
            if self.in_flight >= self.window:  # by a count up to _COUNT_S old: count now
                self._count_acknowledged()
            room = self.in_flight < self.window
            if room:
                try:
                    self._log_producer.produce(self._feature_log, value, key)
                    self._produced += 1
                except BufferError:
                    room = False
        if not room:
            self._dropped()
        self._send(self._predictions, encode(reply), key)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker has acknowledged everything queued
        (``streamlearn.streams.kafka.clients.flush``: raises when it has not within
        ``timeout_s``)."""
        with self._lock:
            self._flushing += 1
        try:
            flush(self._log_producer, timeout_s)
            flush(self.producer, timeout_s)
        finally:
            with self._lock:
                self._flushing -= 1

    def _failed(self, err: Any, msg: Message) -> None:
        """A feature-log record the broker refused (a report comes only for those)."""
        with self._lock:
            self._refused += 1
        FEATURE_LOG_RECORDS.labels("failed").inc()
        _delivered(err, msg)

    def _count_acknowledged(self) -> None:
        """Count as acknowledged the records that left the feature log's producer and
        did not fail (its length: records queued or unacknowledged), its failure reports
        served first under the same hold of the lock; skipped while another thread
        flushes (that flush serves the reports)."""
        with self._lock:
            if self._flushing:
                return
            self._log_producer.poll(0)
            acked = self._produced - self._refused - len(self._log_producer)
            new = acked - self._acked
            if new <= 0:
                return
            self._acked = acked
        self._acknowledged.inc(new)

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
            "broker (slow or down), or the producer's queue was full; their requests were "
            "answered, their impressions will not become training examples",
            n,
            self.window,
        )

    def log_error(self, error: PredictionError, key: str) -> None:
        """Queue the error reply to a request from the request topic on ``predictions``
        (header ``error.status``, so a reader tells it from a reply without decoding),
        after the replies queued before it."""
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
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> bool:
        try:
            self.producer.produce(topic, value, key, headers=headers)
        except BufferError:
            PUBLISH_DROPPED.labels(topic).inc()
            log.error("producer queue full: dropped a record for topic=%s key=%s", topic, key)
            return False
        return True

    def _run(self) -> None:
        """Every ``_COUNT_S``: serve failure reports, count acknowledgements."""
        while not self._stop.wait(_COUNT_S):
            self.producer.poll(0)
            self._count_acknowledged()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the sink's thread, flush what is queued and close the producers.

        Closing explicitly (not when the last reference goes) matters: the HTTP server's
        objects form reference cycles that keep the sink reachable until a garbage
        collection, and an open producer keeps its broker connections.
        """
        self._stop.set()
        self._thread.join(timeout=5.0)
        for producer in (self._log_producer, self.producer):
            try:
                flush(producer, timeout_s)
            except StreamsError as exc:
                log.error("closing the serving producers: %s", exc)
        self._count_acknowledged()
        for producer in (self._log_producer, self.producer):
            close = getattr(producer, "close", None)  # older clients: freed by the GC
            if close is not None:
                close()


def _delivered(err: Any, msg: Message) -> None:
    if err is not None:
        log.error("delivery failed topic=%s key=%r: %s", msg.topic(), msg.key(), err)
