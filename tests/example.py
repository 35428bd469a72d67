"""The built-in example project (``examples/feed_ads``) and its parts, for tests.

The platform holds no domain words; tests of the example's loop take its declarations
from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from streamlearn.models.features import FeatureSpec
from streamlearn.project import Feature, Project, load_project
from streamlearn.streams.contracts import PredictionRequest, Scalar
from streamlearn.streams.features.store import served_features

PROJECT: Final = load_project()
SCHEMA: Final = PROJECT.schema
CATALOG: Final = PROJECT.catalog
MODELS: Final = PROJECT.model_catalog
MODEL_NAMES: Final = MODELS.names
FEED: Final = MODELS.get("feed")
ADS: Final = MODELS.get("ads")
ENGAGEMENT: Final = FEED.head
CLICK: Final = ADS.head
EVENT_TYPES: Final = SCHEMA.types
ENGAGEMENT_TYPES: Final = SCHEMA.engagements
SURFACES: Final = frozenset(SCHEMA.surfaces)
decode_event: Final = SCHEMA.decode


def feed_spec(hash_bits: int = 18, project: Project = PROJECT) -> FeatureSpec:
    """The feed model's feature spec (at another size, or of a variant of the project)."""
    spec = project.model_catalog.get("feed").spec
    return FeatureSpec(spec.categorical, spec.numeric, spec.crosses, hash_bits)


def with_features(*features: Feature) -> Project:
    """The example project with ``features`` declared too (its models take every served
    feature, so the new ones are model inputs)."""
    return dataclasses.replace(PROJECT, features=(*PROJECT.features, *features))


def serving_features(
    request: PredictionRequest,
    item_id: str,
    user: Mapping[str, Scalar] | None,
    item: Mapping[str, Scalar] | None,
    now: float,
) -> dict[str, Scalar]:
    """The raw row serving scores for one candidate of the example project."""
    return served_features(CATALOG).row(request, item_id, user, item, now)
