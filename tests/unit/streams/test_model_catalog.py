"""The example project's models: feed and ads, looked up by name and by surface."""

from __future__ import annotations

import pytest

from streamlearn.streams.catalog.models import ModelCatalog
from streamlearn.streams.errors import CatalogError
from streamlearn.streams.kafka.topics import Topics
from tests.example import ADS, CLICK, ENGAGEMENT, FEED, MODEL_NAMES, MODELS, feed_spec


def test_feed_and_ads_are_declared_once() -> None:
    assert MODELS.names == ("feed", "ads")
    assert MODELS.get("feed") is FEED and MODELS.get("ads") is ADS
    assert FEED.head is ENGAGEMENT and ADS.head is CLICK
    assert FEED.spec == ADS.spec == feed_spec()  # built from the feature declarations
    assert MODELS.for_surface("feed") == "feed" and MODELS.for_surface("ads") == "ads"
    assert MODELS.head("unknown") is None
    with pytest.raises(CatalogError, match=r"among \['feed', 'ads'\]"):
        MODELS.get("nope")


def test_a_surface_has_one_model_and_names_are_unique() -> None:
    with pytest.raises(CatalogError, match="surface 'feed'"):
        ModelCatalog((FEED, ADS.__class__(**{**ADS.__dict__, "surfaces": ("feed",)})))
    with pytest.raises(CatalogError, match="declared twice"):
        ModelCatalog((FEED, FEED))


def test_every_declared_model_has_its_training_topic() -> None:
    topics = Topics("x.")
    names = topics.loop_topics(MODEL_NAMES)
    assert {"x.training-examples.feed", "x.training-examples.ads"} <= set(names)
