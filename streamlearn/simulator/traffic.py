"""The simulated app without any I/O: who asks for which ranking, and what they then do.

:class:`Traffic` turns session visits into prediction requests (a feed or an ads request,
with candidates drawn by popularity) and, given the scores serving returned (or none),
shows the top items and samples what the user does with them from the surface's hidden
truth. The traffic loop (:mod:`streamlearn.simulator.loop`) adds HTTP, Kafka and the wall clock;
tests and measurements drive :class:`Traffic` directly, in virtual time. Everything random comes
from generators seeded with the world's seed, so the same seed, rate and scores give the
same requests, impressions and engagements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.simulator.behaviour import Shown, sample_engagements
from streamlearn.simulator.ranking import ExpectedCtr, compare, ctr_table, rank
from streamlearn.simulator.sessions import SessionParams, Sessions, Visit
from streamlearn.simulator.surfaces import Surface
from streamlearn.simulator.world import World
from streamlearn.streams.contracts import PredictionRequest


@dataclass(frozen=True)
class Planned:
    """A request about to be sent: when (virtual seconds), on which surface, for whom."""

    visit: Visit
    surface: Surface
    user: int
    candidates: np.ndarray
    request: PredictionRequest

    @property
    def t(self) -> float:
        """Virtual time of the request, in seconds since the traffic started."""
        return self.visit.t

    def rows(self) -> list[dict[str, Any]]:
        """The candidates as the raw feature rows a model scores without the feature
        store (user, item, surface, category): what the in-process scorers use."""
        truth = self.surface.truth
        return [
            {
                "user_id": self.request.user_id,
                "item_id": truth.item_ids[s],
                "surface": self.surface.name,
                "item_category": truth.category_name(s),
            }
            for s in self.candidates
        ]


@dataclass(frozen=True)
class Outcome:
    """What was shown for one request and what the user will do about it.

    ``engagements`` are ``(delay_s, type, shown)``, delays counted from the impression;
    ``expected`` compares the ranking with random and the oracle; ``by_model`` is false
    for a request ranked at random because serving gave no scores.
    """

    shown: list[Shown]
    engagements: list[tuple[float, str, Shown]]
    clicks: int
    expected: ExpectedCtr
    by_model: bool


class Traffic:
    """Requests from user sessions over ``surfaces``; ``ads_fraction`` of them on ``ads``.

    ``surfaces`` maps a surface name to its :class:`Surface`; it must hold ``feed``, and
    ``ads`` when ``ads_fraction > 0``.
    """

    def __init__(
        self,
        world: World,
        surfaces: Sequence[Surface],
        rate: float,
        run_id: str,
        ads_fraction: float = 0.0,
        sessions: SessionParams | None = None,
    ) -> None:
        by_name = {s.name: s for s in surfaces}
        if "feed" not in by_name:
            raise ValueError(f"expected a feed surface, got {sorted(by_name)}")
        if not 0.0 <= ads_fraction <= 1.0:
            raise ValueError(f"ads_fraction must be in [0, 1], got {ads_fraction}")
        if ads_fraction > 0 and "ads" not in by_name:
            raise ValueError("ads_fraction > 0 needs an ads surface")
        self.world = world
        self.feed = by_name["feed"]
        self.ads = by_name.get("ads")
        self.surfaces = tuple(by_name.values())
        self.ads_fraction = ads_fraction
        self.run_id = run_id
        self.rng = np.random.default_rng([world.seed, 1])
        self.sessions = Sessions(
            world.activity, rate, np.random.default_rng([world.seed, 3]), sessions
        )
        self.requests = 0

    def plan(self) -> Planned:
        """The next request: the world moved to its time, candidates drawn."""
        visit = self.sessions.next()
        for s in self.surfaces:
            s.truth.advance_to(visit.t)
        surface = self.feed
        if self.ads is not None and self.rng.random() < self.ads_fraction:
            surface = self.ads
        truth = surface.truth
        candidates = truth.sample_candidates(self.rng, surface.n_candidates)
        self.requests += 1
        request = PredictionRequest(
            request_id=f"{self.run_id}-r{self.requests}",
            user_id=self.world.user_ids[visit.user],
            surface=surface.name,
            candidates=[truth.item_ids[s] for s in candidates],
        )
        return Planned(visit, surface, visit.user, candidates, request)

    def show(self, planned: Planned, scores: Sequence[float] | None) -> Outcome:
        """Show the top items by ``scores`` (at random when ``None``), sample the rest."""
        surface, truth = planned.surface, planned.surface.truth
        candidates = planned.candidates
        k = min(surface.k_shown, len(candidates))
        if scores is None:
            order = self.rng.permutation(len(candidates))[:k]
        else:
            order = rank(np.asarray(scores), k)
        table = ctr_table(truth, planned.user, candidates, k)
        ctrs = table[order, np.arange(k)]
        shown: list[Shown] = []
        engagements: list[tuple[float, str, Shown]] = []
        clicks = 0
        for pos, (slot, ctr) in enumerate(zip(candidates[order], ctrs, strict=True)):
            item = Shown(
                user_id=planned.request.user_id,
                item_id=truth.item_ids[slot],
                request_id=planned.request.request_id,
                position=pos,
                category=truth.category_name(slot),
                surface=surface.name,
            )
            shown.append(item)
            for delay, type_ in sample_engagements(
                self.rng, surface.behaviour, float(ctr), truth.base_ctr
            ):
                engagements.append((delay, type_, item))
                clicks += type_ == "click"
        return Outcome(shown, engagements, clicks, compare(table, order), scores is not None)
