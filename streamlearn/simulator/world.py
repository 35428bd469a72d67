"""The hidden truth of the synthetic world: users, items and who clicks what.

Every user has a hidden propensity to click (``user_bias``), an affinity per item
category, a few latent dimensions and an activity level (lognormal: a few users are very
active); every item (:class:`~streamlearn.simulator.catalog.Catalog`) has a category, a hidden
quality, a latent vector, a Zipf-like popularity and a lifetime. The true click
probability of showing item ``i`` to user ``u`` at position ``p`` is::

    sigmoid(user_bias[u] + affinity[u, cat[i]] + latent[u] · latent[i]
            + quality[i] + category_pop[cat[i]] + position_bias[p] - offset)

``offset`` is calibrated at construction so that a popularity-weighted item shown at
position 0 to an activity-weighted user is clicked with probability
``WorldParams.base_ctr``. Popularity decides how often an item is a candidate, not how
much it is liked: the truth has to be learnt, not read off the counts.

Time moves only through :meth:`World.advance_to`, in ticks of ``tick_s`` seconds:
affinities drift (a mean-reverting random walk, so the CTR level stays stable over long
runs), and items whose lifetime is over retire and are replaced by new items with new
ids (so new items appear at ``n_items / item_lifetime_s`` per second). Everything random
comes from one ``numpy.random.Generator`` seeded with ``seed``: two worlds with the same
seed, advanced to the same times, are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.simulator.catalog import Catalog, CatalogParams

#: Bisection steps when calibrating the offset (2**-40 of the initial bracket).
_CALIBRATION_STEPS = 40
_CALIBRATION_PAIRS = 50_000


@dataclass(frozen=True)
class WorldParams:
    """The knobs of the hidden truth (spreads are standard deviations, in logits).

    The defaults were tuned with the ``feed`` model's FTRL (hashed LR over ``user_id``,
    ``item_id``, ``item_category``, ``user_id × item_category`` and the counts and CTRs
    of the feature store; batches of 256 examples after an 8 s label window, ranking
    with a snapshot taken every 10 s), on 2,000 users and 1,000 items at 150 requests/s
    in sessions (:mod:`streamlearn.simulator.sessions`), 20 candidates, 3 shown: expected CTR of
    random ranking ≈ 4 %, of the true top 3 ≈ 14 %, of the model's ranking ≈ 8 %;
    progressive AUC ≈ 0.72 over two minutes. ``activity_skew`` is the lognormal sigma of
    user activity: the top 10 % of users make about half of the requests.
    ``popularity_exponent`` is the Zipf exponent of item popularity (0: uniform pools;
    0.8: the top 1 % of 1,000 items get 15–35 % of the impressions).
    ``position_decay`` scales ``-log2(1 + position)``.
    """

    base_ctr: float = 0.05
    user_bias_scale: float = 1.0
    affinity_scale: float = 0.8
    latent_dims: int = 4
    latent_scale: float = 0.3
    quality_scale: float = 1.0
    category_scale: float = 0.3
    position_decay: float = 0.35
    activity_skew: float = 2.0
    item_lifetime_s: float = 900.0
    popularity_exponent: float = 0.8
    drift_timescale_s: float = 1800.0
    tick_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.base_ctr < 1.0:
            raise ValueError(f"base_ctr must be in (0, 1), got {self.base_ctr}")
        if self.item_lifetime_s <= 0 or self.tick_s <= 0:
            raise ValueError(
                "item_lifetime_s and tick_s must be > 0, got "
                f"{self.item_lifetime_s} and {self.tick_s}"
            )
        if self.popularity_exponent < 0:
            raise ValueError(f"popularity_exponent must be >= 0, got {self.popularity_exponent}")
        if self.drift_timescale_s < 0:
            raise ValueError(f"drift_timescale_s must be >= 0, got {self.drift_timescale_s}")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


class CatalogTruth:
    """What every surface's hidden truth shares: a :class:`Catalog` of items (``items``),
    a position bias, a calibrated base CTR (``params.base_ctr``), and clicks drawn from
    ``sigmoid(logits + position_bias[p])``; a subclass gives :meth:`logits`."""

    items: Catalog
    position_bias: np.ndarray
    params: Any  # WorldParams, AdsParams: each has base_ctr

    @property
    def item_ids(self) -> list[str]:
        """The id of the item in each slot."""
        return self.items.ids

    @property
    def base_ctr(self) -> float:
        """The calibrated CTR of a random candidate at position 0."""
        return float(self.params.base_ctr)

    def category_name(self, slot: int) -> str:
        """The category of the item in ``slot`` as events carry it (``"c7"``)."""
        return self.items.category_name(slot)

    def sample_candidates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` distinct live item slots, drawn by popularity (all when ``n >= n_items``)."""
        return self.items.sample(rng, n)

    def logits(self, user: int, items: np.ndarray | int) -> np.ndarray:
        """True click logits of ``items`` for ``user`` at position 0."""
        raise NotImplementedError

    def true_ctr(
        self, user: int, items: np.ndarray | int, position: np.ndarray | int = 0
    ) -> np.ndarray:
        """True click probability of ``items`` shown to ``user`` at ``position``."""
        return sigmoid(self.logits(user, items) + self.position_bias[np.asarray(position)])

    def calibration_pairs(
        self, rng: np.random.Generator, user_cdf: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(users, items)``: pairs that calibrate the offset, users drawn by activity
        (``user_cdf``), items by popularity."""
        users = np.searchsorted(user_cdf, rng.random(_CALIBRATION_PAIRS), side="right")
        users = np.minimum(users, len(user_cdf) - 1)
        weights = self.items.popularity / self.items.popularity.sum()
        items = rng.choice(len(self.items), _CALIBRATION_PAIRS, p=weights)
        return users, items


class World(CatalogTruth):
    """Seeded users and feed items with hidden preferences, drift and item churn.

    Items live in the slots of :attr:`items`; a retired item's slot is reused by a new
    item with a new id. Methods take user indices and item slots (ints or int arrays);
    ids are in :attr:`user_ids` and :attr:`item_ids`.
    """

    def __init__(
        self,
        seed: int,
        n_users: int = 2000,
        n_items: int = 1000,
        n_categories: int = 12,
        params: WorldParams | None = None,
    ) -> None:
        if min(n_users, n_items, n_categories) < 1:
            raise ValueError(
                "n_users, n_items and n_categories must be >= 1, got "
                f"{n_users}, {n_items}, {n_categories}"
            )
        self.params = p = params or WorldParams()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.n_categories = n_categories
        self.now = 0.0
        self.user_ids = [f"u{u}" for u in range(n_users)]
        activity = self.rng.lognormal(0.0, p.activity_skew, n_users)
        #: each user's share of all activity (sums to 1)
        self.activity = activity / activity.sum()
        self.user_cdf = np.cumsum(self.activity)
        self.user_bias = self.rng.normal(0.0, p.user_bias_scale, n_users)
        self.affinity = self.rng.normal(0.0, p.affinity_scale, (n_users, n_categories))
        self.user_latent = self.rng.normal(0.0, _factor_scale(p), (n_users, p.latent_dims))
        self.category_pop = self.rng.normal(0.0, p.category_scale, n_categories)
        self.position_bias = -p.position_decay * np.log2(1.0 + np.arange(64))
        self.items = Catalog(
            self.rng,
            n_items,
            n_categories,
            CatalogParams(
                prefix="i",
                quality_scale=p.quality_scale,
                latent_dims=p.latent_dims,
                latent_std=_factor_scale(p),
                lifetime_s=p.item_lifetime_s,
                popularity_exponent=p.popularity_exponent,
            ),
        )
        self.offset = 0.0
        self.offset = self._calibrate_offset()

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of live items (constant: a retired item is replaced at once)."""
        return len(self.items)

    def sample_user(self, rng: np.random.Generator) -> int:
        """A user index, drawn in proportion to the users' (skewed) activity."""
        u = int(np.searchsorted(self.user_cdf, rng.random(), side="right"))
        return min(u, self.n_users - 1)

    def logits(self, user: int, items: np.ndarray | int) -> np.ndarray:
        """True click logits of ``items`` for ``user`` at position 0."""
        items = np.asarray(items)
        cat = self.items.category[items]
        return (
            self.user_bias[user]
            + self.affinity[user, cat]
            + self.items.latent[items] @ self.user_latent[user]
            + self.items.quality[items]
            + self.category_pop[cat]
            - self.offset
        )

    def advance_to(self, t: float) -> None:
        """Move world time to ``t`` seconds: drift and churn once per elapsed tick."""
        tick = self.params.tick_s
        while self.now + tick <= t:
            self.now += tick
            self._drift(tick)
            self.items.churn(self.now)

    def _drift(self, dt: float) -> None:
        """Ornstein-Uhlenbeck step of the affinities (stationary spread kept)."""
        tau = self.params.drift_timescale_s
        if tau == 0:
            return
        rho = math.exp(-dt / tau)
        noise = self.rng.normal(0.0, 1.0, self.affinity.shape)
        self.affinity *= rho
        self.affinity += noise * (self.params.affinity_scale * math.sqrt(1.0 - rho * rho))

    def _calibrate_offset(self) -> float:
        """The offset that makes the mean CTR of a candidate at position 0 ``base_ctr``."""
        users, items = self.calibration_pairs(self.rng, self.user_cdf)
        cat = self.items.category[items]
        z = (
            self.user_bias[users]
            + self.affinity[users, cat]
            + np.einsum("ij,ij->i", self.user_latent[users], self.items.latent[items])
            + self.items.quality[items]
            + self.category_pop[cat]
        )
        return calibrate(z, self.params.base_ctr)


def calibrate(z: np.ndarray, target: float) -> float:
    """The offset ``o`` for which ``mean(sigmoid(z - o)) == target`` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(_CALIBRATION_STEPS):
        mid = (lo + hi) / 2.0
        if sigmoid(z - mid).mean() > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _factor_scale(p: WorldParams) -> float:
    """Spread of each latent coordinate so that a user·item dot has std ``latent_scale``."""
    return math.sqrt(p.latent_scale / math.sqrt(max(p.latent_dims, 1)))
