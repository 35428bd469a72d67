"""The ads surface: its own catalog and click model, calibrated, clicks only."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.simulator import AdsParams, AdsWorld, World
from streamlearn.simulator.behaviour import Behaviour, sample_engagements
from streamlearn.simulator.ranking import compare, ctr_table
from streamlearn.simulator.surfaces import clicks_only, default_surfaces


def test_ads_are_their_own_seeded_catalog_and_leave_the_feed_world_alone() -> None:
    world, twin = World(5), World(5)
    a, b = AdsWorld(world), AdsWorld(twin)
    assert a.item_ids == b.item_ids and all(i.startswith("a") for i in a.item_ids)
    assert not set(a.item_ids) & set(world.item_ids)
    np.testing.assert_array_equal(a.ad_bias, b.ad_bias)
    # the ads draw from their own generator: the feed world is as it would be without ads
    np.testing.assert_array_equal(world.items.quality, World(5).items.quality)
    assert world.rng.random() == World(5).rng.random()


def test_ads_ctr_is_calibrated_and_ranking_matters() -> None:
    world = World(1)
    ads = AdsWorld(world)
    rng = np.random.default_rng(3)
    pos0, random, oracle = [], [], []
    for _ in range(2000):
        user = world.sample_user(rng)
        cands = ads.sample_candidates(rng, 10)
        pos0.append(ads.true_ctr(user, cands).mean())
        e = compare(ctr_table(ads, user, cands, 2), np.arange(2))
        random.append(e.random)
        oracle.append(e.oracle)
    assert np.mean(pos0) == pytest.approx(ads.params.base_ctr, rel=0.15)
    assert np.mean(oracle) > 2.0 * np.mean(random)


def test_the_ads_click_model_differs_from_the_feed_engagement_model() -> None:
    world = World(2)
    ads = AdsWorld(world)
    users = np.arange(300)
    # the same user's propensity to click ads is drawn apart from the feed one
    assert abs(np.corrcoef(world.user_bias[users], ads.ad_bias[users])[0, 1]) < 0.2
    # taste for a category carries over partly: ads of a category the user likes on the
    # feed are clicked more, all else equal
    slot = 0
    cat = ads.items.category[slot]
    users = np.arange(world.n_users)
    liked = users[np.argsort(-world.affinity[:, cat])[:200]]
    disliked = users[np.argsort(world.affinity[:, cat])[:200]]
    ctr = {u: float(ads.true_ctr(int(u), slot)) for u in np.concatenate([liked, disliked])}
    assert np.mean([ctr[u] for u in liked]) > 1.5 * np.mean([ctr[u] for u in disliked])
    assert ads.position_bias[1] < world.position_bias[1]  # position matters more for ads


def test_ads_bring_clicks_only() -> None:
    rng = np.random.default_rng(0)
    kinds = {
        t
        for _ in range(5000)
        for _, t in sample_engagements(rng, clicks_only(Behaviour()), 0.3, 0.03)
    }
    assert kinds == {"click"}


def test_ads_churn_with_time() -> None:
    ads = AdsWorld(World(0), params=AdsParams(lifetime_s=60.0))
    first = set(ads.item_ids)
    ads.advance_to(120.0)
    assert len(set(ads.item_ids) - first) > 0.5 * len(first)


def test_default_surfaces() -> None:
    fast = Behaviour(mean_delay_s=0.3, max_delay_s=1.0)
    feed, ads = default_surfaces(World(0), behaviour=fast)
    assert (feed.name, feed.model, feed.n_candidates, feed.k_shown) == ("feed", "feed", 20, 3)
    assert (ads.name, ads.model, ads.n_candidates, ads.k_shown) == ("ads", "ads", 10, 2)
    assert feed.behaviour == fast and ads.behaviour == clicks_only(fast)
    assert ads.behaviour.max_delay_s == 1.0 and ads.behaviour.like_rate == 0.0
    with pytest.raises(ValueError, match="base_ctr"):
        AdsParams(base_ctr=0.0)
