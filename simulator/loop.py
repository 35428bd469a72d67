"""The traffic loop: requests in, ranked impressions and delayed engagements out.

Each request picks a user (active users more often) and ``n_candidates`` live items,
asks serving for scores, shows the top ``k_shown`` as ``impression`` events (positions
``0..k-1``) and schedules the engagements the hidden truth samples for them. When
serving cannot score (not started yet, no model yet, timeout), that request is ranked
at random and counted; the next request tries serving again.

Stopping: requests stop at once; engagements already scheduled keep being published at
their due time for up to ``LoopOptions.drain_s`` seconds (default: the longest delay, so
none is lost), and those not due by then are dropped and counted as
``engagements_dropped``. Then the producer is flushed. ``events_produced`` counts only
events the broker acknowledged (delivery callbacks), so it matches the topic exactly.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Message, Producer

from simulator.behaviour import Behaviour, Schedule, Shown, sample_engagements
from simulator.events import BAD_KINDS, SURFACE, EventIds, activity_event, bad_event
from simulator.ranking import compare, ctr_table, rank
from simulator.scoring import ScoringClient
from simulator.stats import SimStats
from simulator.world import World
from streams.config import KafkaConfig
from streams.contracts import EVENT_TYPES, PredictionRequest
from streams.errors import KafkaError
from streams.kafka import flush, make_producer, produce
from streams.topics import Topics

log = logging.getLogger(__name__)

#: The loop never sleeps longer than this, so stop requests and delivery callbacks
#: are served promptly.
_MAX_WAIT_S = 0.05
#: A loop that fell behind catches up at most this many seconds of requests.
_MAX_BURST_S = 1.0


@dataclass(frozen=True)
class LoopOptions:
    """Rarely changed knobs of the loop."""

    timeout_s: float = 1.0
    drain_s: float = 6.0
    progress_every_s: float = 10.0
    flush_timeout_s: float = 15.0
    latency_window: int = 100_000
    recent_requests: int = 3000


class Simulator:
    """Drives serving and the activity topic from a :class:`World`.

    ``rate`` is the target in requests per second; the loop is synchronous, so it also
    tops out near ``1 / (serving round trip + ~3 ms)``. ``bad_event_rate`` is the chance
    that a published event is followed by a deliberately malformed one (counted in
    ``bad_events_produced``, never in ``events_produced``). Counters accumulate over
    successive :meth:`run` calls; world time carries on.
    """

    def __init__(
        self,
        world: World,
        kafka: KafkaConfig,
        topics: Topics,
        serving_url: str,
        model: str = "feed",
        rate: float = 150.0,
        k_shown: int = 3,
        n_candidates: int = 20,
        bad_event_rate: float = 0.0,
        behaviour: Behaviour | None = None,
        options: LoopOptions | None = None,
    ) -> None:
        if rate <= 0 or not 1 <= k_shown <= n_candidates:
            raise ValueError(
                "expected rate > 0 and 1 <= k_shown <= n_candidates, got "
                f"rate={rate}, k_shown={k_shown}, n_candidates={n_candidates}"
            )
        if not 0.0 <= bad_event_rate <= 1.0:
            raise ValueError(f"bad_event_rate must be in [0, 1], got {bad_event_rate}")
        self.world = world
        self.kafka = kafka
        self.topic = topics.activity
        self.serving_url = serving_url
        self.model = model
        self.rate = rate
        self.k_shown = k_shown
        self.n_candidates = n_candidates
        self.bad_event_rate = bad_event_rate
        self.behaviour = behaviour or Behaviour()
        self.options = options or LoopOptions()
        self.rng = np.random.default_rng([world.seed, 1])
        self.run_id = uuid.uuid4().hex[:12]
        self.ids = EventIds(self.run_id)
        self.schedule = Schedule()
        self._stats = SimStats(self.options.latency_window, self.options.recent_requests)
        self._acks = {t: functools.partial(self._on_delivery, t, False) for t in EVENT_TYPES}
        self._bad_acks = {k: functools.partial(self._on_delivery, k, True) for k in BAD_KINDS}
        self._producer: Producer | None = None
        self._n_requests = 0

    @property
    def producer(self) -> Producer:
        """The Kafka producer of the current run."""
        if self._producer is None:
            raise RuntimeError("the simulator is not running: call run()")
        return self._producer

    # -- public API --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Every figure of the run so far (see ``SimStats.snapshot``)."""
        return self._stats.snapshot()

    def run(
        self,
        max_seconds: float | None = None,
        max_requests: int | None = None,
        stop_event: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Send requests until a bound is reached or ``stop_event`` is set; return stats.

        At least one of the three bounds is required.
        """
        if max_seconds is None and max_requests is None and stop_event is None:
            raise ValueError("expected max_seconds, max_requests or stop_event, got none")
        stop = stop_event or threading.Event()
        start = time.monotonic()
        deadline = start + (max_seconds if max_seconds is not None else math.inf)
        limit = self._n_requests + max_requests if max_requests is not None else math.inf
        # events_produced counts acknowledgements, so every delivery must be reported
        self._producer = make_producer(self.kafka, **{"delivery.report.only.error": False})
        log.info(
            "simulator run=%s topic=%s serving=%s rate=%.0f/s users=%d items=%d",
            self.run_id,
            self.topic,
            self.serving_url,
            self.rate,
            self.world.n_users,
            self.world.n_items,
        )
        try:
            with ScoringClient(self.serving_url, self.model, self.options.timeout_s) as client:
                self._traffic(client, start, deadline, limit, stop)
            self._drain()
        finally:
            self._stats.dropped(self.schedule.clear())
            self._finish()
        return self.stats()

    # -- the loop ----------------------------------------------------------------------
    def _traffic(
        self,
        client: ScoringClient,
        start: float,
        deadline: float,
        limit: float,
        stop: threading.Event,
    ) -> None:
        interval = 1.0 / self.rate
        origin = start - self.world.now  # world time carries on across runs
        next_at = start
        next_report = start + self.options.progress_every_s
        while not stop.is_set() and self._n_requests < limit:
            now = time.monotonic()
            if now >= deadline:
                break
            self.world.advance_to(now - origin)
            self._publish_due(now)
            if now < next_at:
                stop.wait(min(next_at - now, _MAX_WAIT_S))
                continue
            self._request(client)
            next_at = max(next_at + interval, now - _MAX_BURST_S)
            if now >= next_report:
                self._report(now - start)
                next_report = now + self.options.progress_every_s

    def _request(self, client: ScoringClient) -> None:
        self._n_requests += 1
        world, k = self.world, self.k_shown
        user = world.sample_user(self.rng)
        candidates = world.sample_candidates(self.rng, self.n_candidates)
        request = PredictionRequest(
            request_id=f"{self.run_id}-r{self._n_requests}",
            user_id=world.user_ids[user],
            surface=SURFACE,
            candidates=[world.item_ids[s] for s in candidates],
        )
        scored = client.score(request)
        self._stats.request(scored.outcome, scored.latency_s)
        k = min(k, len(candidates))
        if scored.scores is None:
            order = self.rng.permutation(len(candidates))[:k]
        else:
            order = rank(np.asarray(scored.scores), k)
        table = ctr_table(world, user, candidates, k)
        clicks = self._show(request, candidates[order], table[order, np.arange(k)])
        if scored.scores is not None:
            self._stats.ctr.add(k, clicks, compare(table, order))

    def _show(self, request: PredictionRequest, shown: np.ndarray, ctrs: np.ndarray) -> int:
        """Publish the impressions, schedule their engagements; return the clicks."""
        now = time.monotonic()
        clicks = 0
        base = self.world.params.base_ctr
        for pos, (slot, ctr) in enumerate(zip(shown, ctrs, strict=True)):
            item = Shown(
                user_id=request.user_id,
                item_id=self.world.item_ids[slot],
                request_id=request.request_id,
                position=pos,
                category=self.world.category_name(slot),
            )
            self._publish("impression", item)
            engagements = sample_engagements(self.rng, self.behaviour, float(ctr), base)
            for delay, type_ in engagements:
                self.schedule.add(now + delay, type_, item)
                clicks += type_ == "click"
            self._stats.scheduled(len(engagements))
        return clicks

    # -- publishing --------------------------------------------------------------------
    def _publish(self, type_: str, shown: Shown) -> None:
        producer = self.producer
        raw = activity_event(self.ids.next(), type_, shown)
        produce(producer, self.topic, raw, shown.user_id, on_delivery=self._acks[type_])
        if self.bad_event_rate and self.rng.random() < self.bad_event_rate:
            kind, bad = bad_event(self.rng, self.ids.next(), shown)
            produce(producer, self.topic, bad, shown.user_id, on_delivery=self._bad_acks[kind])

    def _publish_due(self, now: float) -> None:
        for pending in self.schedule.pop_due(now):
            self._publish(pending.type, pending.shown)
        self.producer.poll(0)  # serve delivery callbacks

    def _on_delivery(self, label: str, bad: bool, err: Any, msg: Message) -> None:
        if err is not None:
            self._stats.failed()
            log.error("delivery failed topic=%s: %s", msg.topic(), err)
        elif bad:
            self._stats.bad_acked(label)
        else:
            self._stats.acked(label)

    def _drain(self) -> None:
        """Publish scheduled engagements as they come due, for up to ``drain_s``."""
        until = time.monotonic() + self.options.drain_s
        while len(self.schedule):
            due = self.schedule.next_due()
            if due is None or due > until:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(min(due - now, _MAX_WAIT_S))
                self.producer.poll(0)
                continue
            self._publish_due(now)

    def _finish(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                flush(producer, self.options.flush_timeout_s)
            except KafkaError as exc:
                log.error("simulator run=%s: %s", self.run_id, exc)
        self._report(None)

    def _report(self, elapsed: float | None) -> None:
        self._stats.set_pending(len(self.schedule))
        self._stats.publish_gauges()
        s = self._stats.snapshot()
        log.info(
            "simulator %s requests=%d served=%d errors=%d events=%d pending=%d "
            "ctr model=%s expected=%s random=%s oracle=%s (recent %s/%s/%s) p50=%s p99=%s",
            "done" if elapsed is None else f"t={elapsed:.0f}s",
            s["requests"],
            s["served"],
            s["serve_errors"],
            s["events_produced"],
            s["pending_engagements"],
            _pct(s["ctr_model"]),
            _pct(s["ctr_model_expected"]),
            _pct(s["ctr_random"]),
            _pct(s["ctr_oracle"]),
            _pct(s["ctr_model_expected_recent"]),
            _pct(s["ctr_random_recent"]),
            _pct(s["ctr_oracle_recent"]),
            _ms(s["predict_p50_ms"]),
            _ms(s["predict_p99_ms"]),
        )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}ms"
