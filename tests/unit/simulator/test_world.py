"""The feed world: seeded users and items, calibration, drift, churn, Zipf popularity."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from streamlearn.simulator import World, WorldParams
from streamlearn.simulator.catalog import Catalog, CatalogParams
from streamlearn.simulator.ranking import compare, ctr_table, rank
from streamlearn.simulator.shape import top_share


def _requests(world: World, n: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield world.sample_user(rng), world.sample_candidates(rng, 20)


def test_same_seed_same_world_after_drift_and_churn() -> None:
    a, b, c = World(3), World(3), World(4)
    for w in (a, b, c):
        w.advance_to(120.0)
    assert a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.affinity, b.affinity)
    np.testing.assert_array_equal(a.items.quality, b.items.quality)
    np.testing.assert_array_equal(a.items.popularity, b.items.popularity)
    assert a.offset == b.offset
    assert not np.array_equal(a.affinity, c.affinity)
    ra, rb = np.random.default_rng(1), np.random.default_rng(1)
    assert [a.sample_user(ra) for _ in range(50)] == [b.sample_user(rb) for _ in range(50)]
    ra, rb = np.random.default_rng(2), np.random.default_rng(2)
    np.testing.assert_array_equal(a.sample_candidates(ra, 20), b.sample_candidates(rb, 20))


def test_offset_calibrated_to_base_ctr_and_ctrs_in_range() -> None:
    """A candidate (drawn by popularity) at position 0 is clicked at ``base_ctr``."""
    world = World(0)
    pos0 = np.concatenate([world.true_ctr(u, c) for u, c in _requests(world, 400, seed=5)])
    assert pos0.mean() == pytest.approx(world.params.base_ctr, rel=0.15)
    assert ((pos0 > 0) & (pos0 < 1)).all()


def test_random_ctr_a_few_percent_oracle_well_above() -> None:
    world = World(1)
    random, oracle = [], []
    for user, cands in _requests(world, 500):
        e = compare(ctr_table(world, user, cands, 3), np.arange(3))
        assert e.oracle >= e.random - 1e-12
        random.append(e.random)
        oracle.append(e.oracle)
    assert 0.03 <= np.mean(random) <= 0.06
    assert np.mean(oracle) >= 2.5 * np.mean(random)
    assert np.mean(oracle) <= 0.25


def test_ranking_by_the_truth_is_the_oracle() -> None:
    world = World(2)
    for user, cands in _requests(world, 50):
        table = ctr_table(world, user, cands, 3)
        truth_order = rank(world.true_ctr(user, cands), 3)
        e = compare(table, truth_order)
        assert e.model == pytest.approx(e.oracle)
        worst = compare(table, rank(-world.true_ctr(user, cands), 3))
        assert worst.model <= e.random <= e.model


def test_position_bias_lowers_ctr() -> None:
    world = World(0)
    ctr = world.true_ctr(0, np.array([5, 5, 5]), np.arange(3))
    assert ctr[0] > ctr[1] > ctr[2]


def test_affinities_drift_but_keep_their_spread() -> None:
    world = World(0, params=WorldParams(drift_timescale_s=600.0))
    before = world.affinity.copy()
    world.advance_to(60.0)
    assert world.now == 60.0
    moved = np.abs(world.affinity - before).mean()
    assert 0.01 < moved < 0.5
    assert world.affinity.std() == pytest.approx(world.params.affinity_scale, rel=0.1)
    still = World(0, params=WorldParams(drift_timescale_s=0.0))
    still.advance_to(60.0)
    np.testing.assert_array_equal(still.affinity, World(0).affinity)


def test_items_churn_at_the_configured_rate() -> None:
    world = World(0, n_items=300, params=WorldParams(item_lifetime_s=100.0))
    first = set(world.item_ids)
    world.advance_to(50.0)
    assert world.n_items == 300
    assert len(set(world.item_ids)) == 300
    # every retired item is replaced at once: n_items / lifetime = 3 new items per second
    replaced = world.items.created - 300
    assert 110 < replaced < 190
    new = set(world.item_ids) - first
    assert 0.25 * 300 < len(new) <= replaced
    assert (world.items.expires_at > world.now).all()


def test_world_rejects_bad_sizes_and_params() -> None:
    with pytest.raises(ValueError, match="n_users"):
        World(0, n_users=0)
    with pytest.raises(ValueError, match="base_ctr"):
        WorldParams(base_ctr=1.5)
    with pytest.raises(ValueError, match="popularity_exponent"):
        WorldParams(popularity_exponent=-1.0)


# -- popularity --------------------------------------------------------------------------
def _pool_counts(exponent: float, n_items: int = 1000, pools: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(0)
    catalog = Catalog(rng, n_items, 12, CatalogParams(popularity_exponent=exponent))
    counts = np.zeros(n_items)
    for _ in range(pools):
        slots = catalog.sample(rng, 20)
        assert len(set(slots.tolist())) == 20
        counts[slots] += 1
    return counts


def test_candidate_pools_are_heavy_tailed_with_zipf_popularity() -> None:
    zipf, uniform = _pool_counts(0.8), _pool_counts(0.0)
    # uniform: every item is in 20/1000 of the pools, the top 1% hold about 1% of slots
    assert top_share(uniform.tolist(), 0.01) < 0.02
    assert top_share(zipf.tolist(), 0.01) > 0.04
    assert top_share(zipf.tolist(), 0.10) > 0.30
    # rank-frequency falls off: the 10th most frequent item is in far more pools than
    # the 500th, which a uniform catalog does not show
    z, u = np.sort(zipf)[::-1], np.sort(uniform)[::-1]
    assert z[9] > 5 * max(z[499], 1)
    assert u[9] < 2 * u[499]


def test_popularity_follows_the_rank_law() -> None:
    rng = np.random.default_rng(0)
    catalog = Catalog(rng, 1000, 12, CatalogParams(popularity_exponent=1.0))
    w = np.sort(catalog.popularity)[::-1]
    ranks = np.arange(1, 1001)
    # log-log slope of weight against rank (ranks 5..500) is about -exponent
    slope = np.polyfit(np.log(ranks[4:500]), np.log(w[4:500]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)
