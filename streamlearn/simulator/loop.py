"""The traffic loop: requests in, ranked impressions and delayed engagements out.

Requests come from user sessions (:mod:`streamlearn.simulator.sessions`): each is a feed request
(``n_candidates`` items drawn by popularity, the top ``k_shown`` shown) or, with
probability ``ads_fraction``, an ads request (10 ads, 2 shown, clicks only), sent to the
surface's model over HTTP, spread over the serving replicas with failover
(:class:`~streamlearn.simulator.scoring.Replicas`). The shown items are published as ``impression``
events (positions ``0..k-1``) and the engagements the hidden truth samples for them are
scheduled. When serving cannot score (not started yet, no model yet, a model it does not
serve, timeout), that request is ranked at random and counted; the next request tries
serving again.

Time: the sessions' virtual clock is mapped onto the wall clock, so requests come at
``rate`` per second on average, in bursts. A loop that falls behind by more than a
second skips ahead rather than bursting to catch up.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Message, Producer

from streamlearn.simulator.behaviour import Behaviour, Schedule, Shown
from streamlearn.simulator.events import BAD_KINDS, EventIds, activity_event, bad_event
from streamlearn.simulator.example import example
from streamlearn.simulator.scoring import Replicas, parse_urls
from streamlearn.simulator.sessions import SessionParams
from streamlearn.simulator.stats import SimStats
from streamlearn.simulator.surfaces import Surface, default_surfaces
from streamlearn.simulator.traffic import Planned, Traffic
from streamlearn.simulator.world import World
from streamlearn.streams.errors import KafkaError
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

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
    #: a serving replica that could not be reached is skipped for this long
    retry_after_s: float = 1.0


class Simulator:
    """Drives serving and the activity topic from a :class:`World`.

    ``serving_url`` is one URL or several (a sequence, or comma-separated): requests are
    spread over them, failing over when one does not answer. ``rate`` is the target in
    requests per second; the loop is synchronous, so it also tops out near
    ``1 / (serving round trip + ~3 ms)``. ``ads_fraction`` of the requests go to the ads
    surface (model ``ads_model``); ``surfaces`` replaces the default feed and ads
    surfaces (:func:`~streamlearn.simulator.surfaces.default_surfaces`). ``bad_event_rate`` is the
    chance that a published event is followed by a deliberately malformed one (counted
    in ``bad_events_produced``, never in ``events_produced``). Counters accumulate over
    successive :meth:`run` calls; world time carries on.
    """

    def __init__(
        self,
        world: World,
        kafka: KafkaConfig,
        topics: Topics,
        serving_url: str | Sequence[str],
        model: str = "feed",
        rate: float = 150.0,
        k_shown: int = 3,
        n_candidates: int = 20,
        bad_event_rate: float = 0.0,
        behaviour: Behaviour | None = None,
        options: LoopOptions | None = None,
        *,
        ads_fraction: float = 0.3,
        ads_model: str = "ads",
        sessions: SessionParams | None = None,
        surfaces: Sequence[Surface] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"expected rate > 0, got {rate}")
        if not 0.0 <= bad_event_rate <= 1.0:
            raise ValueError(f"bad_event_rate must be in [0, 1], got {bad_event_rate}")
        if surfaces is None:
            surfaces = default_surfaces(world, model, ads_model, behaviour, n_candidates, k_shown)
        declared = set(example().schema.surfaces)
        unknown = {s.name for s in surfaces} - declared
        if unknown:
            raise ValueError(f"expected surfaces among {sorted(declared)}, got {sorted(unknown)}")
        self.world = world
        self.kafka = kafka
        self.topic = topics.activity
        self.serving_urls = parse_urls(serving_url)
        self.rate = rate
        self.bad_event_rate = bad_event_rate
        self.options = options or LoopOptions()
        self.rng = np.random.default_rng([world.seed, 4])
        self.run_id = uuid.uuid4().hex[:12]
        self.traffic = Traffic(world, surfaces, rate, self.run_id, ads_fraction, sessions)
        self.ids = EventIds(self.run_id)
        self.schedule = Schedule()
        self._stats = SimStats(
            self.options.latency_window,
            self.options.recent_requests,
            tuple(s.name for s in surfaces),
        )
        self._acks = {
            (s.name, t): functools.partial(self._on_delivery, s.name, t, False)
            for s in surfaces
            for t in example().schema.types
        }
        self._bad_acks = {k: functools.partial(self._on_delivery, "", k, True) for k in BAD_KINDS}
        self._producer: Producer | None = None
        self._n_requests = 0
        self._planned: Planned | None = None

    @property
    def producer(self) -> Producer:
        """The Kafka producer of the current run."""
        if self._producer is None:
            raise RuntimeError("the simulator is not running: call run()")
        return self._producer

    # -- public API --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Every figure of the run so far (see ``SimStats.snapshot``), the log's shape too."""
        return self._stats.snapshot(shape=True)

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
            "simulator run=%s topic=%s serving=%s rate=%.0f/s users=%d items=%d ads_fraction=%.2f",
            self.run_id,
            self.topic,
            ",".join(self.serving_urls),
            self.rate,
            self.world.n_users,
            self.world.n_items,
            self.traffic.ads_fraction,
        )
        o = self.options
        try:
            with Replicas(self.serving_urls, o.timeout_s, o.retry_after_s) as replicas:
                self._traffic(replicas, start, deadline, limit, stop)
            self._drain()
        finally:
            self._stats.dropped(self.schedule.clear())
            self._finish()
        return self.stats()

    # -- the loop ----------------------------------------------------------------------
    def _traffic(
        self,
        replicas: Replicas,
        start: float,
        deadline: float,
        limit: float,
        stop: threading.Event,
    ) -> None:
        planned = self._planned or self.traffic.plan()
        origin = start - planned.t  # virtual time carries on across runs
        next_report = start + self.options.progress_every_s
        while not stop.is_set() and self._n_requests < limit:
            now = time.monotonic()
            if now >= deadline:
                break
            self._produce_due(now)
            due = origin + planned.t
            if now < due:
                stop.wait(min(due - now, _MAX_WAIT_S))
                continue
            if now - due > _MAX_BURST_S:
                origin += now - due - _MAX_BURST_S
            self._request(replicas, planned)
            planned = self.traffic.plan()
            if now >= next_report:
                self._report(now - start)
                next_report = now + self.options.progress_every_s
        self._planned = planned

    def _request(self, replicas: Replicas, planned: Planned) -> None:
        self._n_requests += 1
        surface = planned.surface.name
        scored = replicas.score(planned.surface.model, planned.request)
        self._stats.request(surface, scored)
        outcome = self.traffic.show(planned, scored.scores)
        self._stats.shape.request(planned.request.user_id, time.time())
        now = time.monotonic()
        for item in outcome.shown:
            self._produce_event("impression", item)
        for delay, type_, item in outcome.engagements:
            self.schedule.add(now + delay, type_, item)
        self._stats.scheduled(len(outcome.engagements))
        self._stats.ranked(
            surface, outcome.by_model, len(outcome.shown), outcome.clicks, outcome.expected
        )

    # -- publishing --------------------------------------------------------------------
    def _produce_event(self, type_: str, shown: Shown) -> None:
        producer = self.producer
        raw = activity_event(self.ids.next(), type_, shown)
        ack = self._acks[(shown.surface, type_)]
        produce(producer, self.topic, raw, shown.user_id, on_delivery=ack)
        self._stats.shape.event(shown.user_id, type_, shown.surface, shown.item_id)
        if self.bad_event_rate and self.rng.random() < self.bad_event_rate:
            kind, bad = bad_event(self.rng, self.ids.next(), shown)
            produce(producer, self.topic, bad, shown.user_id, on_delivery=self._bad_acks[kind])

    def _produce_due(self, now: float) -> None:
        for pending in self.schedule.pop_due(now):
            self._produce_event(pending.type, pending.shown)
        self.producer.poll(0)  # serve delivery callbacks

    def _on_delivery(self, surface: str, label: str, bad: bool, err: Any, msg: Message) -> None:
        if err is not None:
            self._stats.failed()
            log.error("delivery failed topic=%s: %s", msg.topic(), err)
        elif bad:
            self._stats.bad_acked(label)
        else:
            self._stats.acked(surface, label)

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
            self._produce_due(now)

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
        self._stats.update_gauges()
        s = self._stats.snapshot()
        parts = [
            f"{name}: requests={x['requests']} served={x['served']} "
            f"ctr model={_pct(x['ctr_model'])} expected={_pct(x['ctr_model_expected'])} "
            f"random={_pct(x['ctr_random'])} oracle={_pct(x['ctr_oracle'])} "
            f"(recent {_pct(x['ctr_model_expected_recent'])}/{_pct(x['ctr_random_recent'])}"
            f"/{_pct(x['ctr_oracle_recent'])}) "
            f"fallback={x['fallback_requests']} ctr={_pct(x['ctr_fallback'])}"
            for name, x in s["surfaces"].items()
        ]
        log.info(
            "simulator %s events=%d pending=%d failovers=%d p50=%s p99=%s; %s",
            "done" if elapsed is None else f"t={elapsed:.0f}s",
            s["events_produced"],
            s["pending_engagements"],
            s["failovers"],
            _ms(s["predict_p50_ms"]),
            _ms(s["predict_p99_ms"]),
            "; ".join(parts),
        )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}ms"
