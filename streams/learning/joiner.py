"""The online joiner: feature-log ⨝ engagements by request_id within a label window.

Serving logs what it scored per request (``feature-log``); the simulator or any producer publishes
impressions and engagements (``activity``). Both are keyed by user_id, so one request's records meet
in the same partition. When a request's label window closes (event time of the request + the window
of its model's head, or ``window_s``, judged against the partition's watermark: the newest event
time read from the *slower* of the two topics, so a window never closes while the other topic has
not caught up with it), every shown item (an event of an *impression* type of the project) becomes a
``TrainingExample``: label 1 if an engagement that is a positive of the model's head (its definition
in the project's ``streamlearn.streams.catalog.models``) came inside the window, else 0. Items
scored but never shown are not examples. Records whose request never shows up in the feature-log are
dropped after ``orphan_timeout_s`` and counted; records that come after their request's window
closed are dropped and counted too.

Positives at once (``positives_at_once``, the default): a positive is known as soon as
its engagement, its impression and the request's feature-log record are all in, so it is
emitted then, without waiting for the window (what makes a model fresh: an engagement
reaches the trainer a commit interval after it happens, not a window later). The window
still decides the negatives. Each shown item still gives exactly one example with the
label the window gives it, so the examples learned are the same as when all wait for
the window; only the positives come earlier (``bench/bench_delayed_feedback.py``
measures what that does to AUC and calibration). No fake negatives are ever emitted, so
no importance weights are needed to undo them.

Impressions serving never scored (a replayed log: ``streamlearn produce --log``): a request
whose feature-log record has not come ``orphan_timeout_s`` after its first record (or its
head's window, if longer) is labelled the same way, each shown item with the features
the feature store held strictly before the impression
(:class:`~streamlearn.streams.features.history.FeatureHistory`, read on demand from the
``features`` topic), built as serving builds a row, and marked ``served: false`` so that
evaluation keeps served and replayed traffic apart. The model is the one that ranks the
impressions' surface.

Event time moves each partition's windows. Live traffic's event time follows the wall
clock, so a partition whose event time stalls has its watermark held at most
``idle_lateness_s`` behind the wall clock. A replay's event time is far behind it
(``REPLAY_LAG_S``): its watermark moves on only once its event time has stalled for
``idle_lateness_s``, then at the wall clock's pace from where it stalled, so the last
windows of a log close too; and a replaying partition's watermark is held at the slowest
of those whose event time still moves, so a replay's examples come in event-time order
across partitions (a partition read faster than the others does not send its whole log
first), and the trainer learns the log in about the order it happened. A partition that has read no
feature-log record for ``idle_lateness_s`` since the joiner started is fed by activity
alone: its activity's event time is its watermark.

What a request holds does not depend on how the two topics interleaved (a restart, a
rewind or another consumer reads them in another interleaving), so a restarted joiner
emits what an uninterrupted one does (``streamlearn.streams.testing.checks``).

Each example is emitted once, by identity (its request and item). The examples of an
input partition go to the same partition of ``training-examples.<model>`` (modulo its
partition count), and the partition's store keeps, with its offsets, a mark in each of
those partitions below which every example of its committed intervals lies (``marks``,
taken after a commit, so it is below anything not committed yet). On assignment, the
joiner reads its output partitions from the marks to their ends: an example found there
was emitted by an interval that never committed (the joiner was killed between producing
and committing, or the partition moved), and re-applying that interval does not emit it
again. What a frozen worker might still write late is fenced
(``streamlearn.streams.runtime.checkpoint``), and the trainer drops any example it has
already learned (``streamlearn.streams.learning.dedup``).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec
from confluent_kafka import Message
from prometheus_client import Counter

from streamlearn.models.heads import Head
from streamlearn.streams.catalog.features import FeatureCatalog
from streamlearn.streams.catalog.models import ModelCatalog
from streamlearn.streams.contracts import (
    ActivityEvent,
    FeatureLogRecord,
    PredictionRequest,
    Scalar,
    TrainingExample,
    decode_feature_log,
    encode,
)
from streamlearn.streams.errors import StreamsError
from streamlearn.streams.features.history import FeatureHistory
from streamlearn.streams.features.store import served_features
from streamlearn.streams.kafka.clients import Cluster, follow, reader
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.runtime.processor import (
    Decoder,
    Output,
    Record,
    StatefulProcessor,
    TopicPartitionKey,
)
from streamlearn.streams.state.store import Durability

JOINED = Counter(
    "streamlearn_joiner_examples_total",
    "Training examples emitted by the joiner, per label and whether serving scored them.",
    ["label", "served"],
)
DROPPED = Counter(
    "streamlearn_joiner_dropped_total",
    "Requests dropped without examples (no_feature_log; unknown_model: the feature-log names "
    "a model the project does not declare) and records that came after their request's "
    "window closed (after_window).",
    ["reason"],
)
FOUND_EMITTED = Counter(
    "streamlearn_joiner_examples_found_emitted_total",
    "Examples not emitted again because they were found in their topic on assignment "
    "(emitted by an interval that never committed).",
)


@dataclass(frozen=True)
class JoinerConfig:
    """Label window (of heads that declare none) and how long to wait for stragglers."""

    window_s: float = 8.0
    orphan_timeout_s: float = 30.0
    #: When a partition's event time stalls, advance its watermark with the wall clock,
    #: this many seconds behind it; ``None`` uses event time only (replays, tests).
    idle_lateness_s: float | None = 5.0
    #: Emit a positive example as soon as its engagement, impression and feature-log
    #: record are all in (negatives still wait for the window to close); ``False``
    #: emits every example when the window closes.
    positives_at_once: bool = True
    #: Make examples of impressions serving never scored (replayed logs), with their
    #: features as of their time; ``False`` drops them (counted as ``no_feature_log``).
    replayed: bool = True


class _Pending(msgspec.Struct):
    """One request's records so far. Order-independent: the same records give the same
    value whichever of the two topics was read first."""

    #: the earliest event time among the request's records
    first_ts: float
    log: FeatureLogRecord | None = None
    shown: dict[str, int] = {}
    #: item_id → engagement type → its earliest event time (judged against the window
    #: when the window closes, once the feature-log record's time is known)
    engaged: dict[str, dict[str, float]] = {}
    #: items whose positive example was emitted before the window closed (sorted)
    emitted: list[str] = []
    #: the request's user, surface and context (with the declared fields), from its first
    #: impression: what a replayed impression's row is built from
    user_id: str = ""
    surface: str = ""
    context: dict[str, Scalar] | None = None


_DEC = msgspec.json.Decoder(_Pending)
_ENC = msgspec.json.Encoder()


def _decode_log(raw: bytes | None) -> FeatureLogRecord:
    return decode_feature_log(raw, max_bytes=4 * 1024 * 1024)


#: A partition whose event time is this far behind the wall clock is a replay (a
#: historical log): its watermark moves on only once its event time stalls.
REPLAY_LAG_S: Final = 600.0

#: Where a partition's event times per input topic are stored (so a restart closes
#: windows at the same event time as an uninterrupted run).
_WATERMARK_KEY = "_watermark"
_WM_DEC = msgspec.json.Decoder(dict[str, float])
#: The meta value (``PartitionStore.meta``) holding the marks: examples topic → offset.
MARKS = "marks"
#: Seconds between new marks (they bound what an assignment reads back).
MARK_INTERVAL_S = 30.0


class _Identity(msgspec.Struct):
    """What identifies a training example (the rest of the record is not decoded)."""

    request_id: str
    item_id: str


_ID_DEC = msgspec.json.Decoder(_Identity)


class Joiner(StatefulProcessor):
    """Labels served feature vectors with engagements (state: open label windows)."""

    name = "joiner"

    def __init__(
        self,
        topics: Topics,
        state_dir: Path,
        catalog: FeatureCatalog,
        models: ModelCatalog,
        config: JoinerConfig | None = None,
        cluster: Cluster | None = None,
        durability: Durability = Durability.SYNC,
    ) -> None:
        super().__init__(state_dir, topics.joiner_changelog, cluster, durability)
        self.topics = topics
        self.catalog = catalog
        self.schema = catalog.schema
        self.models = models
        self._impressions = self.schema.impressions
        self._engagements = self.schema.engagements
        self._fields = tuple(f.name for f in self.schema.fields)
        self._cluster = cluster
        self._history: FeatureHistory | None = None
        #: partition → (watermark, wall-clock time it last moved), for replays
        self._moved: dict[int, tuple[float, float]] = {}
        self._first_tick: float | None = None
        self.config = config or JoinerConfig()
        # The feature processor dead-letters bad activity; the joiner owns feature-log's.
        self.dead_letter_inputs: frozenset[str] | None = frozenset({topics.feature_log})
        self._deadlines: dict[int, list[tuple[float, str]]] = {}
        #: closed requests' markers (``c/<request_id>``) and when they expire
        self._expiries: dict[int, list[tuple[float, str]]] = {}
        #: partition → input topic → newest event time read
        self._seen: dict[int, dict[str, float]] = {}
        #: partition → (request_id, item_id) of examples found in the topic on assignment
        self._found: dict[int, set[tuple[str, str]]] = {}
        self._partition_counts: dict[str, int] | None = None
        self._marked_at = float("-inf")

    def inputs(self) -> Mapping[str, Decoder]:
        return {self.topics.feature_log: _decode_log, self.topics.activity: self.schema.decode}

    def assign(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        starts = super().assign(partitions)
        for p in {p for _, p in partitions}:
            heap = self._deadlines[p] = []
            for key, raw in self.state[p].items("r/"):
                pend = _DEC.decode(raw)
                heapq.heappush(heap, (self._deadline(pend), key[2:]))
            closed = [(float(raw), key[2:]) for key, raw in self.state[p].items("c/")]
            heapq.heapify(closed)
            self._expiries[p] = closed
            self._load_watermark(p)
            self._found[p] = self._read_back(p)
        return starts

    # -- each example once: output partitions, marks and the read-back ----------------------
    def _example_topics(self) -> list[str]:
        return [self.topics.training_examples(m) for m in self.models.names]

    def _output_partition(self, topic: str, p: int) -> int | None:
        """The partition of ``topic`` the examples of input partition ``p`` go to."""
        if self._cluster is None:
            return None  # no broker to read back from (unit tests): keyed by user
        if self._partition_counts is None:
            self._partition_counts = self._cluster.partition_counts(self._example_topics())
        n = self._partition_counts.get(topic)
        if not n:
            raise StreamsError(f"topic={topic} does not exist: create the loop's topics first")
        return p % n

    def _outputs(self, p: int) -> dict[str, int]:
        """Examples topic → the partition the examples of input partition ``p`` go to."""
        out = {t: self._output_partition(t, p) for t in self._example_topics()}
        return {t: q for t, q in out.items() if q is not None}

    def _read_back(self, p: int) -> set[tuple[str, str]]:
        """(request_id, item_id) of the examples in ``p``'s output partitions from its
        marks to their ends: emitted after its last commit."""
        store = self.state[p]
        if self._cluster is None or not store.offsets():
            return set()  # nothing was emitted from an empty store
        marks = store.meta().get(MARKS, {})
        where = self._outputs(p)
        ends = self._cluster.log_ends(list(where.items()))
        found: set[tuple[str, str]] = set()
        for topic, q in where.items():
            end = ends[(topic, q)]
            start = int(marks.get(topic, 0))
            start = start if start <= end else 0  # the topic was recreated
            if start < end:
                found |= self._identities(topic, q, start, end)
        return found

    def _identities(self, topic: str, q: int, start: int, end: int) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()

        def keep(msgs: Sequence[Message]) -> bool:
            for m in msgs:
                try:
                    ex = _ID_DEC.decode(m.value() or b"")
                except msgspec.DecodeError:
                    pass  # not an example: nothing to skip
                else:
                    found.add((ex.request_id, ex.item_id))
                if (m.offset() or 0) >= end - 1:
                    return True
            return False

        assert self._cluster is not None
        consumer = reader(self._cluster, topic, [q], start=start)
        try:
            if not follow(consumer, keep, timeout_s=120.0, what=f"read-back of topic={topic}"):
                raise StreamsError(
                    f"reading back topic={topic} partition={q} from {start} to {end} did not "
                    "finish within 120s"
                )
        finally:
            consumer.close()
        return found

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        super().commit(offsets)
        if self._cluster is None or not self.state.partitions:
            return
        stores = [self.state[p] for p in self.state.partitions]
        now = time.monotonic()
        if now - self._marked_at < MARK_INTERVAL_S and all(MARKS in s.meta() for s in stores):
            return
        # Everything committed is produced: the ends now are below anything not committed.
        self._marked_at = now
        where = {s.partition: self._outputs(s.partition) for s in stores}
        ends = self._cluster.log_ends({tq for w in where.values() for tq in w.items()})
        for s in stores:
            s.set_meta(MARKS, {t: ends[(t, q)] for t, q in where[s.partition].items()})

    def _load_watermark(self, p: int) -> None:
        raw = self.state[p].get(_WATERMARK_KEY)
        self._seen[p] = {} if raw is None else _WM_DEC.decode(raw)

    def _watermark(self, p: int, now: float) -> float:
        """The slower input's event time. A partition that has read no feature-log record
        for ``idle_lateness_s`` since the joiner started is fed by activity alone (a
        replayed log, no serving): its activity's event time."""
        seen = self._seen.get(p, {})
        activity = seen.get(self.topics.activity, 0.0)
        logged = seen.get(self.topics.feature_log)
        if logged is not None:
            return min(activity, logged)
        lateness = self.config.idle_lateness_s
        if self._first_tick is None:
            self._first_tick = now
        if lateness is not None and now - self._first_tick >= lateness:
            return activity
        return 0.0

    def _idle_watermark(self, p: int, now: float) -> float:
        """The watermark, moved on when event time stalls (see the module docstring)."""
        wm = self._watermark(p, now)
        lateness = self.config.idle_lateness_s
        if lateness is None:
            return wm
        if now - wm <= REPLAY_LAG_S:  # live traffic: event time follows the wall clock
            return max(wm, now - lateness)
        last, since = self._moved.get(p, (-1.0, now))
        if wm != last:
            self._moved[p] = (wm, now)
            return wm
        return wm + max(0.0, now - since - lateness)

    def prepare(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        for p, seen in self._seen.items():
            if seen and p in self.state.partitions:
                raw = _ENC.encode(dict(sorted(seen.items())))
                if self.state[p].get(_WATERMARK_KEY) != raw:
                    self.state[p].put(_WATERMARK_KEY, raw)
        return super().prepare(offsets)

    def discard(self) -> None:
        super().discard()
        for p in self.state.partitions:  # the failed batch may have moved it
            self._load_watermark(p)

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for p in {p for _, p in partitions}:
            self._deadlines.pop(p, None)
            self._expiries.pop(p, None)
            self._seen.pop(p, None)
            self._found.pop(p, None)
            self._moved.pop(p, None)
        super().revoke(partitions)

    def _window(self, head: Head | None) -> float:
        if head is None or head.window_s is None:
            return self.config.window_s
        return head.window_s

    def _deadline(self, pend: _Pending) -> float:
        if pend.log is None:
            return pend.first_ts + self.config.window_s
        return pend.log.ts + self._window(self.models.head(pend.log.model))

    def _replayed_model(self, pend: _Pending) -> str | None:
        """The model of a request serving never scored: the one that ranks its surface."""
        if not self.config.replayed or not pend.shown or not pend.surface:
            return None
        return self.models.for_surface(pend.surface)

    def _orphan_deadline(self, pend: _Pending) -> float:
        """When a request without a feature-log record is given up on (or replayed)."""
        wait = self.config.orphan_timeout_s
        model = self._replayed_model(pend)
        if model is not None:
            wait = max(wait, self._window(self.models.head(model)))
        return pend.first_ts + wait

    def process(self, records: list[Record]) -> list[Output]:
        touched: dict[tuple[int, str], _Pending] = {}
        for r in records:
            value = r.value
            ts = value.ts
            p = r.partition
            seen = self._seen.setdefault(p, {})
            if ts > seen.get(r.topic, 0.0):
                seen[r.topic] = ts
            rid = value.request_id
            pend = touched.get((p, rid))
            if pend is None:
                raw = self.state[p].get("r/" + rid)
                if raw is None and self.state[p].get("c/" + rid) is not None:
                    DROPPED.labels("after_window").inc()  # its window has closed
                    continue
                if raw is None:
                    pend = _Pending(first_ts=ts, shown={}, engaged={})
                    heapq.heappush(
                        self._deadlines.setdefault(p, []), (ts + self.config.window_s, rid)
                    )
                else:
                    pend = _DEC.decode(raw)
                touched[(p, rid)] = pend
            if ts < pend.first_ts:
                pend.first_ts = ts
                heapq.heappush(self._deadlines.setdefault(p, []), (ts + self.config.window_s, rid))
            if isinstance(value, FeatureLogRecord):
                pend.log = value
            else:
                self._apply_event(pend, value)
        out: list[Output] = []
        for (p, rid), pend in touched.items():
            if self.config.positives_at_once and pend.log is not None:
                out.extend(self._examples(p, pend.log, pend, positives_only=True))
            self.state[p].put("r/" + rid, _ENC.encode(pend))
        return out

    def _apply_event(self, pend: _Pending, ev: ActivityEvent) -> None:
        if ev.type in self._impressions:
            pend.shown[ev.item_id] = ev.position if ev.position is not None else -1
            if not pend.surface:
                pend.user_id, pend.surface = ev.user_id, ev.surface
                context: dict[str, Scalar] = dict(ev.context or {})
                for name in self._fields:
                    value = getattr(ev, name)
                    if value is not None:
                        context[name] = value
                pend.context = context or None
        elif ev.type in self._engagements:
            kinds = pend.engaged.setdefault(ev.item_id, {})
            if ev.ts < kinds.get(ev.type, float("inf")):
                kinds[ev.type] = ev.ts

    def _watermarks(self, now: float) -> dict[int, float]:
        """Each partition's watermark; a replay's held at the slowest of its partitions
        whose event time still moves, so that its examples come in event-time order across
        partitions (not a partition's whole log, then the next's, as the reads happened to
        go). A partition whose event time has stalled (its log is read) holds no other."""
        marks = {p: self._idle_watermark(p, now) for p in self._deadlines}
        replaying = [p for p, wm in marks.items() if wm and now - wm > REPLAY_LAG_S]
        lateness = self.config.idle_lateness_s
        moving = [
            marks[p]
            for p in replaying
            if lateness is None or now - self._moved.get(p, (0.0, now))[1] <= lateness
        ]
        if moving:
            floor = min(moving)
            for p in replaying:
                marks[p] = min(marks[p], floor)
        return marks

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        marks = self._watermarks(now)
        history: list[FeatureHistory] = []  # caught up once per tick, when first needed
        # the requests due, earliest deadline first across partitions
        due = [(h[0][0], p) for p, h in self._deadlines.items() if h and h[0][0] <= marks[p]]
        heapq.heapify(due)
        while due:
            _, p = heapq.heappop(due)
            heap, wm = self._deadlines[p], marks[p]
            _, rid = heapq.heappop(heap)
            out.extend(self._due(p, rid, wm, history))
            if heap and heap[0][0] <= wm:
                heapq.heappush(due, (heap[0][0], p))
        for p in self._deadlines:
            self._expire(p, marks[p])
        return out

    def _due(self, p: int, rid: str, wm: float, history: list[FeatureHistory]) -> list[Output]:
        """Close request ``rid`` of partition ``p`` if its window has closed at ``wm`` (else
        put it back with its true deadline); its examples."""
        heap = self._deadlines[p]
        raw = self.state[p].get("r/" + rid)
        if raw is None:
            return []
        pend = _DEC.decode(raw)
        true_deadline = self._deadline(pend)
        out: list[Output] = []
        if pend.log is None:
            orphan = self._orphan_deadline(pend)
            if orphan > wm:
                heapq.heappush(heap, (orphan, rid))
                return []
            model = self._replayed_model(pend)
            store = self._feature_history() if model is not None else None
            if model is None or store is None:
                DROPPED.labels("no_feature_log").inc()
            else:
                if not history:
                    store.catch_up()
                    history.append(store)
                out = self._replayed(p, rid, pend, model, store)
        elif true_deadline > wm:
            heapq.heappush(heap, (true_deadline, rid))
            return []
        else:
            out = self._examples(p, pend.log, pend)
        self._close(p, rid, true_deadline)
        return out

    def _feature_history(self) -> FeatureHistory | None:
        """The feature store's history (read from the features topic), made when the first
        replayed impression needs it; ``None`` without a cluster to read from."""
        if self._history is None and self._cluster is not None:
            self._history = FeatureHistory(self._cluster, self.topics.features, self.catalog)
        return self._history

    def _replayed(
        self, p: int, rid: str, pend: _Pending, model: str, history: FeatureHistory
    ) -> list[Output]:
        """The examples of a request serving never scored (see the module docstring)."""
        head = self.models.head(model)
        assert head is not None
        t = pend.first_ts
        closes = t + self._window(head)
        request = PredictionRequest(rid, pend.user_id, pend.surface, list(pend.shown), pend.context)
        served = served_features(self.catalog)
        user = history.at("user", pend.user_id, t)
        others = {e: history.at(e, i, t) for e, i in served.entity_ids(request).items()}
        topic = self.topics.training_examples(model)
        partition = self._output_partition(topic, p)
        found = self._found.get(p, ())
        out = []
        for item_id in pend.shown:
            engaged = pend.engaged.get(item_id, {})
            hits = [ts for k, ts in engaged.items() if k in head.positives and ts <= closes]
            label: Literal[0, 1] = 1 if hits else 0
            row = served.row(request, item_id, user, history.at("item", item_id, t), t, others)
            ex = TrainingExample(
                request_id=rid,
                user_id=pend.user_id,
                item_id=item_id,
                surface=pend.surface,
                ts=t,
                label=label,
                features=row,
                label_ts=min(hits) if hits else None,
                served=False,
            )
            if (rid, item_id) in found:
                FOUND_EMITTED.inc()
            else:
                out.append(Output(topic, encode(ex), pend.user_id, partition))
                JOINED.labels(str(label), "false").inc()
        self.state[p].count(f"emitted:{topic}", len(pend.shown))
        return out

    def _close(self, p: int, rid: str, deadline: float) -> None:
        """Forget a request; records for it that still come are dropped until
        ``orphan_timeout_s`` after its deadline (whichever topic was read faster)."""
        expiry = deadline + self.config.orphan_timeout_s
        store = self.state[p]
        store.delete("r/" + rid)
        store.put("c/" + rid, repr(expiry).encode())
        heapq.heappush(self._expiries.setdefault(p, []), (expiry, rid))

    def _expire(self, p: int, wm: float) -> None:
        heap = self._expiries.get(p, [])
        store = self.state[p]
        while heap and heap[0][0] <= wm:
            _, rid = heapq.heappop(heap)
            if store.get("c/" + rid) is not None:
                store.delete("c/" + rid)

    def _examples(
        self, p: int, log: FeatureLogRecord, pend: _Pending, positives_only: bool = False
    ) -> list[Output]:
        """The examples of the request's shown items not emitted yet (``positives_only``:
        of those labelled 1 so far, remembered in ``pend.emitted``); those found in the
        topic on assignment are not emitted again."""
        head = self.models.head(log.model)
        if head is None:
            DROPPED.labels("unknown_model").inc()
            return []
        topic = self.topics.training_examples(log.model)
        partition = self._output_partition(topic, p)
        found = self._found.get(p, ())
        positives = head.positives
        closes = log.ts + self._window(head)
        emitted = pend.emitted
        # a shadow version's score travels with each example (the rollout compares it)
        shadow = log.shadow_version
        if shadow is not None and any(i.shadow_score is None for i in log.items):
            shadow = None
        out = []
        emitted_here = 0  # in the topic, now or by an interval that never committed
        for item in log.items:
            if item.item_id not in pend.shown or item.item_id in emitted:
                continue
            engaged = pend.engaged.get(item.item_id, {})
            hits = [ts for k, ts in engaged.items() if k in positives and ts <= closes]
            if positives_only and not hits:
                continue
            label: Literal[0, 1] = 1 if hits else 0
            ex = TrainingExample(
                request_id=log.request_id,
                user_id=log.user_id,
                item_id=item.item_id,
                surface=log.surface,
                ts=log.ts,
                label=label,
                features=item.features,
                served_version=log.version,
                served_score=item.score,
                label_ts=min(hits) if hits else None,
                shadow_version=shadow,
                shadow_score=None if shadow is None else item.shadow_score,
            )
            if (log.request_id, item.item_id) in found:
                FOUND_EMITTED.inc()
            else:
                out.append(Output(topic, encode(ex), log.user_id, partition))
                JOINED.labels(str(label), "true").inc()
            emitted_here += 1
            if positives_only:
                pend.emitted = sorted([*pend.emitted, item.item_id])
        self.state[p].count(f"emitted:{topic}", emitted_here)
        return out
