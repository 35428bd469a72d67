"""The bodies of the native HTTP API (``/v1``) as msgspec structs.

Prediction requests and CTR replies are the record contracts of :mod:`streamlearn.streams.contracts`
(the same bytes travel on Kafka); the structs here are the HTTP-only bodies. The
OpenAPI document (``GET /openapi.json``) is generated from these types.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorReply(msgspec.Struct, frozen=True):
    """Every error: what was expected and what was got."""

    error: str


class VisionRequest(msgspec.Struct, frozen=True):
    """Classify one image: ``image`` (H×W or C×H×W, 0–255, or 0–1 when no value
    exceeds 1) or ``image_png_base64``.

    Vision bodies are read as a JSON object and checked by
    :func:`streamlearn.serving.vision.image_array` (which gives the error messages); this struct
    documents them.
    """

    request_id: str
    image: list[Any] | None = None
    image_png_base64: str | None = None


class VisionReply(msgspec.Struct, frozen=True):
    """Class probabilities, in the order of ``classes``."""

    request_id: str
    model: str
    version: int
    probs: list[float]
    classes: list[str]


class VersionInfo(msgspec.Struct, frozen=True):
    """One version of a model in the registry."""

    version: int
    stage: str
    created_at: float | None
    learner: str | None


class ModelInfo(msgspec.Struct, frozen=True):
    """A served model: its kind (``ctr``/``vision``; null before a version is loaded),
    the version serving now, and every version in the registry."""

    name: str
    kind: str | None
    serving_version: int | None
    versions: list[VersionInfo]


class TrafficFigures(msgspec.Struct, frozen=True):
    """A version's live figures on one traffic (null where undefined)."""

    count: int
    positives: int
    auc: float | None
    logloss: float | None
    ne: float | None
    calibration: float | None


class VersionDetail(msgspec.Struct, frozen=True):
    """One version: stage, origin, lineage, training metrics, its live evaluation per
    traffic (``served``: its answers, ``shadow``: scored beside production,
    ``progressive``: predict-before-learn) and the last rollout or admin decision."""

    version: int
    stage: str
    serving: bool
    shadow: bool
    origin: str | None
    created_at: float | None
    learner: str | None
    parent_version: int | None
    metrics: dict[str, Any]
    evaluation: dict[str, TrafficFigures]
    decision: dict[str, Any] | None


class ModelDetail(msgspec.Struct, frozen=True):
    """``GET /v1/models/{model}``: the version serving, the shadow, every version."""

    name: str
    kind: str | None
    serving_version: int | None
    shadow_version: int | None
    versions: list[VersionDetail]


class ModelsReply(msgspec.Struct, frozen=True):
    """``GET /v1/models``."""

    models: list[ModelInfo]


class Health(msgspec.Struct, frozen=True):
    """``GET /healthz``: the process answers; the version each model serves (null: none)."""

    status: str
    models: dict[str, int | None]


class StageReply(msgspec.Struct, frozen=True):
    """An admin stage change: what was done, and what this server serves afterwards."""

    model: str
    action: str
    version: int
    previous: int | None
    serving_version: int | None


class FeatureInfo(msgspec.Struct, frozen=True):
    """One declared feature (``streamlearn.streams.catalog.features``)."""

    name: str
    entity: str
    type: str
    description: str
    owner: str
    version: int


class FeaturesReply(msgspec.Struct, frozen=True):
    """``GET /v1/features``: every declared feature, in declared order."""

    features: list[FeatureInfo]


class EntityRef(msgspec.Struct, frozen=True):
    """One entity to read: its kind (``user``, ``item`` or a declared entity) and id."""

    entity: str
    id: str


class FeaturesReadRequest(msgspec.Struct, frozen=True):
    """``POST /v1/features:read``: the entities to read, in the order to answer them."""

    entities: list[EntityRef]


class EntityRead(msgspec.Struct, frozen=True):
    """One entity's values (``values`` and ``as_of`` null when it has none stored)."""

    entity: str
    id: str
    values: dict[str, str | int | float] | None
    as_of: float | None


class FeaturesReadReply(msgspec.Struct, frozen=True):
    """``POST /v1/features:read``: one answer per requested entity, in request order."""

    entities: list[EntityRead]
