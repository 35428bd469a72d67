"""Thin confluent-kafka wrappers: the narrow client protocols, the cluster view, ``follow``.

Everything above this module talks to Kafka through three narrow protocols —
``ProducerLike``, ``ConsumerLike`` and ``Cluster`` (clients, topic ids, partition counts,
true log ends) — so the runtime, state restore and every processor also run on the
in-memory broker of ``streamlearn.streams.testing.memory`` in unit tests.
``KafkaCluster`` is the real one.

``follow`` is the one consume loop shared by the edge readers (changelog restore, serving's
replica, model updates and request topic, tests reading topics back); the micro-batch
runtime keeps its own loop, because it also owns rebalances and checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamlearn.streams.errors import KafkaError
from streamlearn.streams.kafka.config import KafkaConfig

log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection retries and the like) go through Python logging
#: instead of straight to stderr.
_CLIENT_LOG = logging.getLogger("librdkafka")

Headers = list[tuple[str, str | bytes | None]]
TopicPartitionKey = tuple[str, int]


# -- the narrow protocols -------------------------------------------------------------------
class ProducerLike(Protocol):
    """What streamlearn needs from a producer (confluent-kafka's ``Producer`` has it)."""

    def produce(self, topic: str, value: Any = ..., key: Any = ..., *args: Any, **kw: Any) -> None:
        """Queue one record; raises ``BufferError`` when the local queue is full."""
        ...

    def poll(self, timeout: float = ...) -> int:
        """Serve delivery callbacks."""
        ...

    def flush(self, timeout: float = ...) -> int:
        """Wait for acknowledgements; return how many records are still unacknowledged."""
        ...

    def purge(self, *args: Any, **kw: Any) -> None:
        """Drop the records not sent yet."""
        ...


class ConsumerLike(Protocol):
    """What streamlearn needs from a consumer (confluent-kafka's ``Consumer`` has it)."""

    def subscribe(self, topics: list[str], *args: Any, **kw: Any) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def unassign(self) -> None: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Message]: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def commit(self, *args: Any, **kw: Any) -> Any: ...

    def assignment(self) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def get_watermark_offsets(self, partition: TopicPartition, *args: Any, **kw: Any) -> Any: ...

    def close(self) -> None: ...


class Cluster(Protocol):
    """The cluster as state and runtimes see it: clients, topic identity, true log ends."""

    def producer(self, **extra: Any) -> ProducerLike:
        """A new idempotent producer (``extra``: librdkafka settings)."""
        ...

    def consumer(self, group_id: str, **extra: Any) -> ConsumerLike:
        """A new consumer in ``group_id`` (manual commits; reads from the beginning)."""
        ...

    def topic_ids(self, topics: Collection[str]) -> dict[str, str]:
        """Each topic's id: a fresh one each time a topic is created (absent: unknown)."""
        ...

    def log_ends(self, partitions: Collection[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The true end offset (next offset to be written) of each partition."""
        ...

    def partition_counts(self, topics: Collection[str]) -> dict[str, int]:
        """How many partitions each topic has (absent: no such topic)."""
        ...


# -- the real thing -------------------------------------------------------------------------
def _log_delivery_error(err: Any, msg: Message) -> None:
    if err is not None:
        log.error("delivery failed topic=%s: %s", msg.topic(), err)


def make_producer(config: KafkaConfig, **extra: Any) -> Producer:
    """An idempotent producer; delivery errors are logged."""
    conf = config.producer_conf(**extra)
    conf.setdefault("error_cb", lambda e: log.warning("producer error: %s", e))
    conf.setdefault("on_delivery", _log_delivery_error)
    conf.setdefault("logger", _CLIENT_LOG)
    return Producer(conf)


def make_consumer(config: KafkaConfig, group_id: str, **extra: Any) -> Consumer:
    """A consumer in ``group_id`` with manual commits and fast group joins."""
    conf = config.consumer_conf(group_id, **extra)
    conf.setdefault("error_cb", lambda e: log.warning("consumer error: %s", e))
    conf.setdefault("logger", _CLIENT_LOG)
    return Consumer(conf)


class KafkaCluster:
    """``Cluster`` on a real Kafka-protocol cluster.

    **Topic ids** come from ``AdminClient.describe_topics``: a topic gets a new id each
    time it is created, on Apache Kafka (≥ 2.8) and on the embedded broker alike, so a
    recreated topic or a different cluster is recognised. (The embedded broker's cluster
    id is a constant, so cluster ids cannot tell two of them apart.)

    **Log ends** are never taken from ListOffsets, which the embedded broker answers
    wrongly (watermarks (0, 1)). A throw-away consumer fetches each partition from its
    beginning with partition-EOF events on and one byte of fetch budget; the first fetch
    response (a record or an end-of-partition event) carries the partition's true high
    watermark, which librdkafka caches and ``get_watermark_offsets(cached=True)`` returns.
    That costs one small fetch per partition and reads nothing else.
    """

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def producer(self, **extra: Any) -> Producer:
        return make_producer(self.config, **extra)

    def consumer(self, group_id: str, **extra: Any) -> Consumer:
        return make_consumer(self.config, group_id, **extra)

    def topic_ids(self, topics: Collection[str], timeout_s: float = 10.0) -> dict[str, str]:
        admin = AdminClient(self.config.admin_conf(), logger=_CLIENT_LOG)
        out: dict[str, str] = {}
        futures = admin.describe_topics(TopicCollection(sorted(set(topics))))
        for name, fut in futures.items():
            try:
                desc = fut.result(timeout=timeout_s)
            except KafkaException as exc:
                raise KafkaError(f"cannot describe topic={name}: {exc}") from exc
            if desc.topic_id is not None and str(desc.topic_id) not in (
                "",
                "AAAAAAAAAAAAAAAAAAAAAA",
            ):
                out[name] = str(desc.topic_id)
        return out

    def partition_counts(self, topics: Collection[str], timeout_s: float = 10.0) -> dict[str, int]:
        admin = AdminClient(self.config.admin_conf(), logger=_CLIENT_LOG)
        try:
            meta = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaError(f"cannot list topics: {exc}") from exc
        return {
            t: len(meta.topics[t].partitions)
            for t in topics
            if t in meta.topics and meta.topics[t].error is None
        }

    def log_ends(
        self, partitions: Collection[TopicPartitionKey], timeout_s: float = 15.0
    ) -> dict[TopicPartitionKey, int]:
        if not partitions:
            return {}
        consumer = make_consumer(
            self.config,
            f"probe-{uuid.uuid4().hex}",
            **{"enable.partition.eof": True, "max.partition.fetch.bytes": 1},
        )
        want = set(partitions)
        out: dict[TopicPartitionKey, int] = {}
        try:
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in sorted(want)])
            deadline = time.monotonic() + timeout_s
            while want - out.keys() and time.monotonic() < deadline:
                for m in consumer.consume(len(want), 0.2):
                    err = m.error()
                    if err is not None and err.code() != err._PARTITION_EOF:
                        continue
                    key = (m.topic() or "", m.partition() or 0)
                    if key in want and key not in out:
                        _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                        out[key] = int(high)
        finally:
            consumer.close()
        missing = sorted(want - out.keys())
        if missing:
            raise KafkaError(f"no fetch answered for {missing} within {timeout_s}s")
        return out


# -- producing ------------------------------------------------------------------------------
def produce(
    producer: ProducerLike,
    topic: str,
    value: bytes | None,
    key: str | bytes | None = None,
    headers: Headers | None = None,
    on_delivery: Callable[[Any, Message], None] = _log_delivery_error,
    partition: int | None = None,
) -> None:
    """Produce one record, serving delivery callbacks when the local queue is full."""
    kw: dict[str, Any] = {"headers": headers, "on_delivery": on_delivery}
    if partition is not None:
        kw["partition"] = partition
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:
            producer.poll(0.05)


def flush(producer: ProducerLike, timeout_s: float = 30.0) -> None:
    """Wait until every produced record is acknowledged, or raise ``KafkaError``."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise KafkaError(f"{remaining} records not acknowledged within {timeout_s}s")


# -- consuming ------------------------------------------------------------------------------
def check(msg: Message) -> bool:
    """True for a data message; False for a partition-EOF event; raise on a real error."""
    err = msg.error()
    if err is None:
        return True
    if err.code() == err._PARTITION_EOF:
        return False
    if err.fatal():
        raise KafkaError(f"consume failed: {err}")
    log.warning("consumer error (continuing): %s", err)
    return False


#: A ``follow`` handler gets each non-empty batch of data messages; returning True stops.
Handler = Callable[[Sequence[Message]], bool | None]


def follow(
    consumer: ConsumerLike,
    handler: Handler,
    *,
    stop: threading.Event | None = None,
    timeout_s: float | None = None,
    idle_s: float | None = None,
    batch_size: int = 1000,
    poll_s: float = 0.1,
    what: str = "topic",
    retry_s: float = 1.0,
    tick: Callable[[], None] | None = None,
) -> bool:
    """Hand every batch ``consumer`` delivers to ``handler`` until it says it is done.

    Returns True when ``handler`` returned True; False when ``stop`` was set, ``timeout_s``
    passed, or no data came for ``idle_s``. ``tick`` runs after every poll, with data or
    not (periodic work). A Kafka error (``KafkaError``, ``KafkaException``) in consuming
    or in the handler is logged with ``what`` and retried after ``retry_s``; anything else
    propagates. The caller owns (and closes) the consumer.

    A batch is handed over as soon as its first message is there: librdkafka's
    ``consume(n, timeout)`` waits out its whole timeout unless ``n`` messages come, so
    ``follow`` waits for one (up to ``poll_s``) and then takes what is already fetched
    (``timeout=0``), up to ``batch_size``.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_data = time.monotonic()
    while stop is None or not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        if idle_s is not None and now - last_data >= idle_s:
            return False
        try:
            got = consumer.consume(1, poll_s)
            if got and batch_size > 1:
                got += consumer.consume(batch_size - 1, 0)
            msgs = [m for m in got if check(m)]
            if msgs:
                last_data = time.monotonic()
                if handler(msgs):
                    return True
            if tick is not None:
                tick()
        except (KafkaError, KafkaException) as exc:
            log.error("consumer error on %s: %s", what, exc)
            if stop is not None:
                stop.wait(retry_s)
            else:
                time.sleep(retry_s)
    return False


def reader(
    cluster: Cluster,
    topic: str,
    partitions: Collection[int] | None = None,
    *,
    start: int = OFFSET_BEGINNING,
    **extra: Any,
) -> ConsumerLike:
    """A consumer reading ``topic`` from ``start``: assigned to ``partitions`` (no group
    membership, nothing committed), or subscribed in a group of its own when ``None``."""
    consumer = cluster.consumer(f"reader-{uuid.uuid4().hex}", **extra)
    if partitions is None:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    return consumer


class Follower:
    """``follow`` on a background thread: ``start()``, then ``stop()`` joins and closes."""

    def __init__(
        self, consumer: ConsumerLike, handler: Handler, name: str, **follow_kw: Any
    ) -> None:
        self._consumer = consumer
        self._handler = handler
        self._name = name
        self._kw = follow_kw
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Follower:
        """Start following on a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            follow(self._consumer, self._handler, stop=self._stop, what=self._name, **self._kw)
        except Exception:
            log.exception("%s stopped on an error", self._name)
        finally:
            self._consumer.close()

    @property
    def consumer(self) -> ConsumerLike:
        """The consumer being followed (for commits from the handler)."""
        return self._consumer

    @property
    def stopping(self) -> threading.Event:
        """Set when ``stop()`` was asked (handlers may wait on it)."""
        return self._stop

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop following, wait for the thread, close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None


__all__ = [
    "Cluster",
    "ConsumerLike",
    "Follower",
    "KafkaCluster",
    "KafkaException",
    "ProducerLike",
    "check",
    "flush",
    "follow",
    "make_consumer",
    "make_producer",
    "produce",
    "reader",
]
