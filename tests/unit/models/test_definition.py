"""ModelDef: one definition builds the learner everywhere."""

from __future__ import annotations

import pytest

from streamlearn.models.definition import ModelDef
from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec
from tests.example import CLICK, ENGAGEMENT

SPEC = FeatureSpec(categorical=("item_id",), hash_bits=10)


def test_create_follows_the_head_and_params() -> None:
    feed = ModelDef("feed", ENGAGEMENT, SPEC, "ftrl", {"alpha": 0.2})
    learner = feed.create(seed=3)
    assert type(learner).__name__ == "FTRL" and learner.params()["alpha"] == 0.2
    ads = ModelDef("ads", CLICK, SPEC)
    wrapped = ads.create()
    assert type(wrapped).__name__ == "Downsampled"
    assert wrapped.params()["negative_rate"] == CLICK.negative_rate
    assert wrapped.featuriser.spec == SPEC


def test_with_learner_keeps_params_of_the_same_learner_only() -> None:
    feed = ModelDef("feed", ENGAGEMENT, SPEC, "ftrl", {"alpha": 0.2})
    assert feed.with_learner(params={"beta": 0.5}).params == {"alpha": 0.2, "beta": 0.5}
    assert feed.with_learner("ftrl", {"alpha": 0.3}).params == {"alpha": 0.3}
    fm = feed.with_learner("fm")
    assert fm.learner == "fm" and fm.params == {}  # ftrl's alpha is not fm's
    assert feed.params == {"alpha": 0.2}  # frozen: the original is unchanged


def test_names_are_topic_safe_and_info_is_json() -> None:
    with pytest.raises(ModelError, match="model name"):
        ModelDef("feed/x", ENGAGEMENT, SPEC)
    info = ModelDef("ads", CLICK, SPEC, surfaces=("ads",)).info()
    assert info["head"] == "click" and info["positives"] == ["click"]
    assert info["surfaces"] == ["ads"] and info["feature_spec"] == SPEC.to_dict()
