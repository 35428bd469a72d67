"""Feature values as they stood at a time: the feature store read as of an impression.

The joiner labels impressions that serving never scored (a replayed log): their features
are the ones the feature store held just before the impression, not the ones it holds
when the label window closes. :class:`FeatureHistory` reads the ``features`` topic (the
store's changelog, every partition) and keeps each entity's last ``depth`` records per
partition with their times; :meth:`FeatureHistory.at` gives an entity's values as of a
time: the newest record of each partition strictly before it, partials merged.

It is read on demand, on the reader's thread: :meth:`FeatureHistory.catch_up` consumes
what the topic holds now (every partition, assigned: no group to join first), until each
partition's end is reached, so a lookup sees every record written before it was asked. A
record's time is the newest event it reflects; a commit that took in events on both sides
of the impression is left out whole, so values can be one commit interval stale, never
from the future. Memory is bounded per entity (``depth`` records per partition), not in
the number of entities.
"""

from __future__ import annotations

import bisect
import logging
import time

import msgspec
from confluent_kafka import KafkaError, Message

from streamlearn.streams.catalog.features import FeatureCatalog
from streamlearn.streams.contracts import FeatureRecord, Scalar
from streamlearn.streams.errors import StreamsError
from streamlearn.streams.features.store import is_partial, merge_partials
from streamlearn.streams.kafka.clients import Cluster, ConsumerLike, check, reader

log = logging.getLogger(__name__)
_DECODER = msgspec.json.Decoder(FeatureRecord)


class FeatureHistory:
    """Recent feature records of every entity, by partition and time (see the module)."""

    def __init__(
        self, cluster: Cluster, topic: str, catalog: FeatureCatalog, depth: int = 16
    ) -> None:
        self.topic = topic
        self.catalog = catalog
        self.depth = depth
        self._cluster = cluster
        self._consumer: ConsumerLike | None = None
        #: partition → whether its end was reached after its last record read
        self._at_end: dict[int, bool] = {}
        #: ``<entity>/<id>`` → partition → (times ascending, values)
        self._records: dict[str, dict[int, tuple[list[float], list[dict[str, Scalar]]]]] = {}
        #: records applied (bad ones skipped)
        self.applied = 0

    def _reader(self) -> ConsumerLike:
        if self._consumer is None:
            n = self._cluster.partition_counts([self.topic]).get(self.topic)
            if not n:
                raise StreamsError(f"topic={self.topic} does not exist: create the topics first")
            self._consumer = reader(
                self._cluster, self.topic, range(n), **{"enable.partition.eof": True}
            )
            self._at_end = dict.fromkeys(range(n), False)
        return self._consumer

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read what the topic holds now: until every partition's end is reached (at most
        ``timeout_s``, then a warning)."""
        consumer = self._reader()
        at_end = self._at_end
        deadline = time.monotonic() + timeout_s
        while True:
            done = all(at_end.values())
            msgs = consumer.consume(1000, 0.0 if done else 0.05)
            if not msgs and done:
                return
            for m in msgs:
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    at_end[m.partition() or 0] = True
                elif check(m):
                    at_end[m.partition() or 0] = False
                    self._apply(m)
            if time.monotonic() >= deadline:
                log.warning(
                    "topic=%s: not caught up within %.0fs (partitions at their end: %s)",
                    self.topic,
                    timeout_s,
                    sorted(p for p, end in at_end.items() if end),
                )
                return

    def _apply(self, m: Message) -> None:
        key, value = m.key(), m.value()
        if not key or value is None or key.startswith(b"__"):
            return
        try:
            rec = _DECODER.decode(value)
        except msgspec.DecodeError:
            return  # serving's replica counts bad records; here they are skipped
        self.apply(f"{rec.entity}/{rec.id}", m.partition() or 0, rec.ts, rec.values)

    def apply(self, key: str, partition: int, ts: float, values: dict[str, Scalar]) -> None:
        """Record one feature record (``key`` is ``<entity>/<id>``)."""
        times, kept = self._records.setdefault(key, {}).setdefault(partition, ([], []))
        i = bisect.bisect_right(times, ts)
        times.insert(i, ts)
        kept.insert(i, values)
        if len(times) > self.depth:
            del times[0], kept[0]
        self.applied += 1

    def at(self, entity: str, entity_id: str, t: float) -> dict[str, Scalar] | None:
        """``entity``'s stored values as of time ``t`` (records strictly before it), or
        ``None`` when it had none then."""
        parts = self._records.get(f"{entity}/{entity_id}")
        if not parts:
            return None
        found = []
        for times, kept in parts.values():
            i = bisect.bisect_left(times, t)
            if i:
                found.append(kept[i - 1])
        if not found:
            return None
        if is_partial(entity) and entity in self.catalog.entities:
            return merge_partials(entity, found, self.catalog)
        return found[-1]

    def close(self) -> None:
        """Close the reader."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
