"""The faust-streaming adapter: runs a ``BatchProcessor`` as a faust agent.

For teams that run faust workers. The processor is the same object the default
``runtime.MicroBatchRuntime`` runs; only the consuming side changes. Per batch of
``stream.take_events(batch_size, within=within_s)``: decode (a bad record goes to its
dead-letter topic), apply the batch function and ``tick``, produce its outputs and
changelog records with a confluent-kafka producer (dead letters as the default runtime
writes them, :mod:`streamlearn.streams.kafka.dead_letters`), wait for acknowledgements, then
``commit`` state with the input offsets. faust acks the batch's events after that and commits its
own group offsets.

The app has no faust tables (~450 µs/event measured here, and faust table recovery is
wrong on the embedded broker), no exactly-once (the aiokafka transactional producer fails
on the embedded broker), no leader topic and no web server.

Guarantee (as the default runtime): state is exactly-once with respect to the input,
outputs are at-least-once; a partition resumes only from the offsets stored with the
state (or its beginning), never from faust's committed offset.

- The batch body is synchronous (no ``await``), so a batch is never cancelled half-way:
  every event faust acks has been committed to state first.
- faust starts each partition at its own committed offset. The runtime tracks the next
  offset per partition (the stored one on assignment; for a partition without one, the
  partition's first offset) and skips records below it (``skipped``), so nothing is
  applied twice. A record *above* it (faust's offset is ahead of the state: the state was
  lost or rolled back) is not applied: the runtime seeks faust's consumer back to the
  expected offset and withholds everything until that record arrives. If it never does
  within ``gap_timeout_s`` (the broker has no record there: a compacted topic, or
  transaction markers), the gap is logged as a warning and processing goes on.
- If a batch fails beyond the record-by-record retry (broker down, state write error),
  its events are withheld from faust's commit, the runtime stops and ``run`` raises.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import faust
from confluent_kafka import OFFSET_BEGINNING, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from faust.types import TP, EventT, StreamT

from streamlearn.streams.errors import StreamsError
from streamlearn.streams.kafka.clients import make_consumer, make_producer
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.runtime.applier import BatchApplier, RuntimeStats
from streamlearn.streams.runtime.processor import Processor, TopicPartitionKey

log = logging.getLogger(__name__)

_POLL_S = 0.05
#: How often faust's position of a partition is compared with the expected offset until
#: the partition's first record arrives.
_CHECK_S = 0.5


class FaustRuntime:
    """Run a processor as a faust agent consuming its input topics."""

    def __init__(
        self,
        processor: Processor,
        kafka: KafkaConfig,
        group_id: str,
        batch_size: int = 2000,
        within_s: float = 0.1,
        gap_timeout_s: float = 10.0,
    ) -> None:
        unsupported = {k: v for k, v in kafka.security().items() if k != "client.id"}
        if unsupported:
            raise StreamsError(
                "FaustRuntime talks PLAINTEXT only; security settings are not mapped to "
                f"faust credentials, got {sorted(unsupported)}"
            )
        self.processor = processor
        self.kafka = kafka
        self.group_id = group_id
        self.batch_size = batch_size
        self.within_s = within_s
        self.gap_timeout_s = gap_timeout_s
        #: Records delivered again below the offsets stored with the state, not applied.
        self.skipped = 0
        #: Records withheld above the expected offset while faust's consumer seeks back.
        self.withheld = 0
        self._producer: Producer = make_producer(kafka)
        self._applier = BatchApplier(processor, self._producer)
        self.stats = self._applier.stats
        self._decoders = self._applier.topics
        # Assigned input partitions → next offset to apply.
        self._next: dict[TopicPartitionKey, int] = {}
        # Partitions faust must be sought back on → (offset, monotonic time of the ask).
        self._seek_to: dict[TopicPartitionKey, int] = {}
        self._gap_since: dict[TopicPartitionKey, float] = {}
        self._app: faust.App | None = None
        # Assigned partitions whose position faust has not yet shown to be right.
        self._unconfirmed: set[TopicPartitionKey] = set()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._max_events: int | None = None

    def stop(self) -> None:
        """Ask the runtime to finish its current batch and return (thread-safe)."""
        self._stop.set()

    # -- the faust app -------------------------------------------------------------------
    def _build_app(self, datadir: Path) -> faust.App:
        client_id = self.kafka.client_overrides.get("client.id")
        app = faust.App(
            self.group_id,
            broker=[f"kafka://{h.strip()}" for h in self.kafka.bootstrap_servers.split(",")],
            store="memory://",
            datadir=str(datadir),
            autodiscover=False,
            web_enabled=False,
            topic_disable_leader=True,
            topic_partitions=self.kafka.partitions,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            # Never wait for unacked events at stop: every acked event is in the state,
            # and a withheld (failed) batch must stay uncommitted.
            stream_wait_empty=False,
            **({"broker_client_id": client_id} if client_id else {}),
        )
        topic = app.topic(
            *self._decoders,
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            internal=False,
            allow_empty=True,
        )
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

        async def agent(stream: StreamT[Any]) -> None:
            # ``take_events`` is on faust.Stream, not on the StreamT protocol.
            batches = cast(faust.Stream[Any], stream).take_events(
                self.batch_size, within=self.within_s
            )
            async for events in batches:
                self._on_batch(events)
                for (t, p), off in self._take_seeks():
                    await app.consumer.seek(TP(t, p), off)

        app.agent(topic, name=f"{self.processor.name}-batches")(agent)
        return app

    def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """faust ``on_partitions_assigned``: open state, remember where each resumes."""
        assigned: set[TP] = args[0]
        keys = sorted((tp.topic, tp.partition) for tp in assigned if tp.topic in self._decoders)
        starts = self.processor.assign(keys)
        beginning = [k for k in keys if starts[k] == OFFSET_BEGINNING]
        starts.update(self._first_offsets(beginning))
        self._next = {k: starts[k] for k in keys}
        self._unconfirmed = set(keys)
        log.info(
            "processor=%s assigned %s",
            self.processor.name,
            ", ".join(f"topic={t} partition={p} offset={starts[(t, p)]}" for t, p in keys),
        )

    def _first_offsets(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The first offset of each partition (ListOffsets(earliest) is right on every
        broker we know, unlike latest)."""
        if not keys:
            return {}
        consumer = make_consumer(self.kafka, f"{self.group_id}-first-offsets")
        try:
            return {
                (t, p): int(consumer.get_watermark_offsets(KafkaTopicPartition(t, p), 10.0)[0])
                for t, p in keys
            }
        finally:
            consumer.close()

    async def _check_positions(self, app: faust.App) -> None:
        """Seek faust back where its position is ahead of the expected offset, for the
        partitions whose first record has not come yet (with nothing new to read, a gap
        would never show). A partition is checked until a record of it arrives, because
        faust seeks every partition to its committed offset once its recovery ends."""
        for key in sorted(self._unconfirmed):
            expected = self._next.get(key)
            if expected is None:
                self._unconfirmed.discard(key)
                continue
            try:
                position = await app.consumer.position(TP(*key))
            except Exception as exc:  # not assigned on faust's side yet
                log.debug("no position for topic=%s partition=%d yet: %s", key[0], key[1], exc)
                continue
            if position is None:
                continue
            if position > expected:
                log.warning(
                    "processor=%s topic=%s partition=%d faust's position %d is ahead of the "
                    "state's offset %d: seeking back",
                    self.processor.name,
                    key[0],
                    key[1],
                    position,
                    expected,
                )
                await app.consumer.seek(TP(*key), expected)
            # else: right for now; faust may still seek it to its committed offset

    def _take_seeks(self) -> list[tuple[TopicPartitionKey, int]]:
        out = list(self._seek_to.items())
        self._seek_to = {}
        return out

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """faust ``on_partitions_revoked``: close the state of partitions taken away."""
        revoked: set[TP] = args[0]
        keys = [(tp.topic, tp.partition) for tp in revoked if tp.topic in self._decoders]
        self.processor.revoke(keys)
        for k in keys:
            self._next.pop(k, None)
            self._gap_since.pop(k, None)

    # -- one batch (synchronous: never cancelled half-way) -------------------------------
    def _on_batch(self, events: Sequence[EventT]) -> None:
        if self._failure is not None:
            _withhold(events)
            return
        try:
            self._handle(events)
        except Exception as exc:
            log.exception("processor=%s batch failed; stopping", self.processor.name)
            _withhold(events)
            self._failure = exc
            self._stop.set()
            return
        if self._max_events is not None and self.stats.consumed >= self._max_events:
            self._stop.set()

    def _handle(self, events: Sequence[EventT]) -> None:
        msgs: list[Message] = []
        withheld: list[EventT] = []
        for ev in events:
            m = ev.message
            key = (m.topic, m.partition)
            if key not in self._next:  # buffered before its partition was revoked
                withheld.append(ev)
                continue
            expected = self._next[key]
            if m.offset < expected:
                self.skipped += 1
                self._unconfirmed.discard(key)
                continue
            if m.offset > expected and not self._gap_accepted(key, m.offset, expected):
                withheld.append(ev)
                self.withheld += 1
                continue
            self._gap_since.pop(key, None)
            self._unconfirmed.discard(key)
            self._next[key] = m.offset + 1
            msgs.append(
                Message(
                    topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value
                )
            )
        # Not applied: the new owner, or this runtime after its seek, reads them again.
        _withhold(withheld)
        self._applier.apply(msgs)

    def _gap_accepted(self, key: TopicPartitionKey, offset: int, expected: int) -> bool:
        """A record above the expected offset: seek back once; accept the gap only when
        the expected record has not come within ``gap_timeout_s``."""
        now = time.monotonic()
        since = self._gap_since.get(key)
        if since is None:
            log.warning(
                "processor=%s topic=%s partition=%d delivered offset=%d, expected %d (faust's "
                "committed offset is ahead of the state): seeking back",
                self.processor.name,
                key[0],
                key[1],
                offset,
                expected,
            )
            self._gap_since[key] = now
            self._seek_to[key] = expected
            return False
        if now - since < self.gap_timeout_s:
            return False
        log.warning(
            "processor=%s gap topic=%s partition=%d offset=%d expected=%d: no record there "
            "after %.0fs; going on",
            self.processor.name,
            key[0],
            key[1],
            offset,
            expected,
            self.gap_timeout_s,
        )
        return True

    # -- running -------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None, max_events: int | None = None) -> RuntimeStats:
        """Run until ``stop()``, ``max_seconds`` elapse, or ``max_events`` are consumed.

        Blocks the calling thread (any thread) on a private event loop; no signal
        handlers are installed and logging is left to the caller. Raises the exception
        of a batch that failed beyond the record-by-record retry.
        """
        self._max_events = max_events
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        loop = asyncio.new_event_loop()
        try:
            with tempfile.TemporaryDirectory(prefix=f"faust-{self.processor.name}-") as d:
                loop.run_until_complete(self._main(Path(d), deadline))
                _cancel_all(loop)
        finally:
            loop.close()
            try:
                self.processor.close()
            finally:
                self._producer.flush(10)
        if self._failure is not None:
            raise StreamsError(
                f"processor={self.processor.name} stopped on a failed batch: {self._failure}"
            ) from self._failure
        return self.stats

    async def _main(self, datadir: Path, deadline: float | None) -> None:
        app = self._app = self._build_app(datadir)
        starting = asyncio.ensure_future(app.start())
        next_check = 0.0
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if starting.done() and starting.exception() is not None:
                    raise StreamsError(f"faust app {self.group_id} failed to start") from (
                        starting.exception()
                    )
                await asyncio.sleep(_POLL_S)
                if time.monotonic() >= next_check:
                    await self._check_positions(app)
                    next_check = time.monotonic() + _CHECK_S
            # Between batches (the batch body never awaits), so ``finish`` is safe here.
            if self._failure is None:
                self._applier.finish()
        finally:
            if not starting.done():
                starting.cancel()
            await app.stop()


def _withhold(events: Sequence[EventT]) -> None:
    """Keep faust from ever committing these events' offsets (they were not applied)."""
    for ev in events:
        ev.message.acked = True


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what faust left running on ``loop`` and let it unwind."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
