"""The hidden truth of the ads surface: who clicks which ad.

Ads are a catalog of their own (ids ``a0``, ``a1``, …; categories shared with the feed;
Zipf-like popularity, as a few advertisers buy most of the traffic; longer lifetimes, as
campaigns run longer than posts). The same users see them, but an ad click is a
different act from engaging with a post, so the click model is its own::

    sigmoid(ad_bias[u] + interest · affinity[u, cat[a]] + quality[a]
            + position_bias[p] - offset)

``ad_bias`` is a per-user propensity to click ads, drawn independently of the feed's
``user_bias``; ``interest`` is how much of the user's (drifting) feed taste for a category
carries over to its ads; ads have no latent tastes, and position matters more. ``offset``
is calibrated so that a popularity-weighted ad at position 0 is clicked with probability
``AdsParams.base_ctr`` by an activity-weighted user. Ads bring clicks only (no likes,
shares, hides or conversions on this surface).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamlearn.simulator.catalog import Catalog, CatalogParams
from streamlearn.simulator.world import CatalogTruth, World, calibrate


@dataclass(frozen=True)
class AdsParams:
    """The knobs of the ads truth (spreads are standard deviations, in logits)."""

    base_ctr: float = 0.03
    user_bias_scale: float = 0.8
    interest: float = 0.6
    quality_scale: float = 1.5
    position_decay: float = 0.8
    lifetime_s: float = 1800.0
    popularity_exponent: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.base_ctr < 1.0:
            raise ValueError(f"base_ctr must be in (0, 1), got {self.base_ctr}")


class AdsWorld(CatalogTruth):
    """Ads and the users' hidden ad preferences, on top of a :class:`World`'s users.

    Seeded from the world's seed (its own generator, so adding ads does not change the
    feed world). Time moves with the world's: call :meth:`advance_to` with the same ``t``.
    """

    def __init__(self, world: World, n_ads: int = 200, params: AdsParams | None = None) -> None:
        self.world = world
        self.params = p = params or AdsParams()
        self.rng = np.random.default_rng([world.seed, 2])
        self.ad_bias = self.rng.normal(0.0, p.user_bias_scale, world.n_users)
        self.position_bias = -p.position_decay * np.log2(1.0 + np.arange(64))
        self.items = Catalog(
            self.rng,
            n_ads,
            world.n_categories,
            CatalogParams(
                prefix="a",
                quality_scale=p.quality_scale,
                lifetime_s=p.lifetime_s,
                popularity_exponent=p.popularity_exponent,
            ),
        )
        self.now = 0.0
        self.offset = 0.0
        self.offset = self._calibrate_offset()

    def logits(self, user: int, ads: np.ndarray | int) -> np.ndarray:
        """True click logits of ``ads`` for ``user`` at position 0."""
        ads = np.asarray(ads)
        cat = self.items.category[ads]
        return (
            self.ad_bias[user]
            + self.params.interest * self.world.affinity[user, cat]
            + self.items.quality[ads]
            - self.offset
        )

    def advance_to(self, t: float) -> None:
        """Retire and replace the ads whose campaigns are over by ``t``."""
        if t > self.now:
            self.now = t
            self.items.churn(t)

    def _calibrate_offset(self) -> float:
        users, ads = self.calibration_pairs(self.rng, self.world.user_cdf)
        z = (
            self.ad_bias[users]
            + self.params.interest * self.world.affinity[users, self.items.category[ads]]
            + self.items.quality[ads]
        )
        return calibrate(z, self.params.base_ctr)
