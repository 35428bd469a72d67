"""Where items are shown: the feed and the ads slot, each with its own hidden truth.

A :class:`Surface` names the surface events and requests carry, the model serving ranks
it with, the truth that decides clicks (:class:`Truth`: the feed's
:class:`~streamlearn.simulator.world.World` or the :class:`~streamlearn.simulator.ads.AdsWorld`),
what users do after an impression (:class:`~streamlearn.simulator.behaviour.Behaviour`) and how many
candidates
are
ranked and shown.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamlearn.simulator.ads import AdsWorld
from streamlearn.simulator.behaviour import Behaviour
from streamlearn.simulator.world import World


def clicks_only(behaviour: Behaviour) -> Behaviour:
    """``behaviour``'s delays, with clicks as the only engagement: ads bring no likes,
    shares, conversions or hides."""
    return dataclasses.replace(
        behaviour, like_rate=0.0, share_rate=0.0, conversion_rate=0.0, hide_rate=0.0
    )


class Truth(Protocol):
    """The hidden click model of one surface's items."""

    @property
    def item_ids(self) -> list[str]: ...

    @property
    def base_ctr(self) -> float: ...

    def category_name(self, slot: int) -> str: ...

    def sample_candidates(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def true_ctr(
        self, user: int, items: np.ndarray | int, position: np.ndarray | int = 0
    ) -> np.ndarray: ...

    def advance_to(self, t: float) -> None: ...


@dataclass(frozen=True)
class Surface:
    """One surface of the app and how it is ranked."""

    name: str
    model: str
    truth: Truth
    behaviour: Behaviour
    n_candidates: int
    k_shown: int

    def __post_init__(self) -> None:
        if not 1 <= self.k_shown <= self.n_candidates:
            raise ValueError(
                "expected 1 <= k_shown <= n_candidates, got "
                f"k_shown={self.k_shown}, n_candidates={self.n_candidates}"
            )


def default_surfaces(
    world: World,
    feed_model: str = "feed",
    ads_model: str = "ads",
    behaviour: Behaviour | None = None,
    n_candidates: int = 20,
    k_shown: int = 3,
    ads: AdsWorld | None = None,
) -> tuple[Surface, Surface]:
    """The feed (``n_candidates`` ranked, top ``k_shown`` shown) and the ads slot (10
    ads ranked, 2 shown, clicks only, with ``behaviour``'s delays) of ``world``'s users."""
    behaviour = behaviour or Behaviour()
    feed = Surface("feed", feed_model, world, behaviour, n_candidates, k_shown)
    ads_surface = Surface("ads", ads_model, ads or AdsWorld(world), clicks_only(behaviour), 10, 2)
    return feed, ads_surface
