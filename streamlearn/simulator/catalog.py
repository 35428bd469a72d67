"""Items in fixed slots: ids, categories, hidden qualities, popularity and lifetimes.

Feed items and ads are both catalogs. A slot holds one live item; when its lifetime is
over it retires and a new item with a new id takes the slot (churn).

Popularity is Zipf-like: a new item draws a uniform quantile ``q`` and gets the weight
``q ** -exponent`` (capped at ``n ** exponent``), so the live weights, ranked, fall off as
``rank ** -exponent`` — the rank-frequency law of real catalogs, where a few items are in
most candidate pools and most items are rarely seen. Candidate pools are drawn without
replacement in proportion to these weights (Gumbel top-k, the exact successive-sampling
law). ``exponent = 0`` gives uniform pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CatalogParams:
    """How a catalog's items are drawn (spreads are standard deviations, in logits)."""

    prefix: str = "i"
    quality_scale: float = 1.0
    latent_dims: int = 0
    latent_std: float = 0.0
    lifetime_s: float = 900.0
    popularity_exponent: float = 1.0

    def __post_init__(self) -> None:
        if self.lifetime_s <= 0:
            raise ValueError(f"lifetime_s must be > 0, got {self.lifetime_s}")
        if self.popularity_exponent < 0:
            raise ValueError(f"popularity_exponent must be >= 0, got {self.popularity_exponent}")


class Catalog:
    """``n`` live items in slots; every random draw comes from the ``rng`` passed in."""

    def __init__(
        self, rng: np.random.Generator, n: int, n_categories: int, params: CatalogParams
    ) -> None:
        if n < 1 or n_categories < 1:
            raise ValueError(f"expected n >= 1 and n_categories >= 1, got {n}, {n_categories}")
        self.rng = rng
        self.params = params
        self.n_categories = n_categories
        self.created = 0
        self.ids = [""] * n
        self.category = np.zeros(n, dtype=np.int64)
        self.quality = np.zeros(n)
        self.latent = np.zeros((n, params.latent_dims))
        self.popularity = np.ones(n)
        self.log_popularity = np.zeros(n)
        self.expires_at = np.zeros(n)
        self.replace(np.arange(n), now=0.0)

    def __len__(self) -> int:
        return len(self.ids)

    def category_name(self, slot: int) -> str:
        """The category of the item in ``slot`` as events carry it (``"c7"``)."""
        return f"c{self.category[slot]}"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` distinct slots drawn in proportion to popularity (all when ``n >= len``)."""
        if n >= len(self):
            return rng.permutation(len(self))
        keys = self.log_popularity + rng.gumbel(size=len(self))
        top = np.argpartition(-keys, n - 1)[:n]
        return top[np.argsort(-keys[top], kind="stable")]

    def churn(self, now: float) -> int:
        """Replace every item whose lifetime is over; return how many were replaced."""
        retired = np.flatnonzero(self.expires_at <= now)
        if retired.size:
            self.replace(retired, now)
        return int(retired.size)

    def replace(self, slots: np.ndarray, now: float) -> None:
        """Put new items (new ids, new hidden values) into ``slots``."""
        p, n, rng = self.params, len(slots), self.rng
        for s in slots:
            self.ids[s] = f"{p.prefix}{self.created}"
            self.created += 1
        self.category[slots] = rng.integers(0, self.n_categories, n)
        self.quality[slots] = rng.normal(0.0, p.quality_scale, n)
        self.latent[slots] = rng.normal(0.0, p.latent_std, (n, p.latent_dims))
        q = np.maximum(rng.random(n), 1.0 / len(self))
        self.popularity[slots] = q**-p.popularity_exponent
        self.log_popularity[slots] = np.log(self.popularity[slots])
        self.expires_at[slots] = now + rng.exponential(p.lifetime_s, n)
