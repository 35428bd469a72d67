"""The native HTTP API: ``/v1`` predictions and models, health and metrics.

* ``POST /v1/models/{model}:predict`` — a prediction request →
  ``{"request_id", "model", "version", "scores"}``; for a vision model
  ``{"request_id", "image" | "image_png_base64"}`` → ``{…, "probs", "classes"}``;
* ``GET /v1/models`` — every served model with its serving version and all versions and
  stages in the registry;
* ``GET /v1/models/{model}`` — one model: serving and shadow versions, and per version its
  stage, origin, training metrics, live evaluation (AUC, NE, calibration on the traffic it
  served, as a shadow, and predict-before-learn) and the last decision about it;
* ``GET /healthz`` — liveness, with the version each model serves;
* ``GET /metrics`` — Prometheus exposition of the process registry.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamlearn.models.errors import ModelError
from streamlearn.models.stages import decisions
from streamlearn.serving.errors import BadRequest, ModelNotFound, RegistryUnavailable
from streamlearn.serving.routing import Request, Response, Router
from streamlearn.serving.schema import (
    ErrorReply,
    Health,
    ModelDetail,
    ModelInfo,
    ModelsReply,
    TrafficFigures,
    VersionDetail,
    VersionInfo,
    VisionReply,
    VisionRequest,
)
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import Sink
from streamlearn.streams.contracts import PredictionReply, PredictionRequest, decode_request, encode
from streamlearn.streams.errors import ContractError

TAG: Final = "v1"
_REQUEST_SHAPE: Final = (
    'expected {"request_id": str, "user_id": str, "surface": str, '
    '"candidates": [str, ...], "context"?: {str: str | number}}'
)
_ENCODER: Final = msgspec.json.Encoder()


def v1_routes(service: PredictionService, sink: Sink | None, max_body_bytes: int) -> Router:
    """The native API's routes over ``service``; served predictions go to ``sink``."""
    router = Router()

    @router.route(
        "POST",
        "/v1/models/{model}:predict",
        summary="Score candidates for a user (CTR models) or classify an image (vision models).",
        tag=TAG,
        request=(PredictionRequest, VisionRequest),
        responses={
            200: (PredictionReply, VisionReply),
            400: ErrorReply,
            404: ErrorReply,
            411: ErrorReply,
            413: ErrorReply,
            503: ErrorReply,
        },
    )
    def predict(req: Request) -> Response:
        model = req.params["model"]
        if service.session(model).kind == "vision":
            try:
                payload = msgspec.json.decode(req.body)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"expected a JSON object, got invalid JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise BadRequest(f"expected a JSON object, got {type(payload).__name__}")
            return Response(200, _ENCODER.encode(service.predict_vision(model, payload)))
        try:
            request = decode_request(req.body, max_body_bytes, service.catalog.schema.surfaces)
        except ContractError as exc:
            raise BadRequest(f"{_REQUEST_SHAPE}; got: {exc}") from None
        reply, record = service.predict(model, request)
        if sink is not None:
            sink.log_prediction(reply, record)
        return Response(200, encode(reply))

    @router.route(
        "GET",
        "/v1/models",
        summary="Served models: the version serving now, every version and its stage.",
        tag=TAG,
        responses={200: ModelsReply, 500: ErrorReply},
    )
    async def models(req: Request) -> Response:
        reply = await asyncio.to_thread(_models, service)
        return Response(200, _ENCODER.encode(reply))

    @router.route(
        "GET",
        "/v1/models/{model}",
        summary="One model: its versions with stage, live evaluation per version (AUC, NE, "
        "calibration) and the rollout's decisions.",
        tag=TAG,
        responses={200: ModelDetail, 404: ErrorReply, 500: ErrorReply},
    )
    async def model_detail(req: Request) -> Response:
        model = req.params["model"]
        if model not in service.models:
            raise ModelNotFound(f"expected a model among {list(service.models)}, got {model!r}")
        reply = await asyncio.to_thread(_model_detail, service, model)
        return Response(200, _ENCODER.encode(reply))

    @router.route(
        "GET",
        "/healthz",
        summary="Liveness, with the version each model serves.",
        tag="ops",
        responses={200: Health},
    )
    def healthz(req: Request) -> Response:
        health = Health("ok", {m: service.version(m) for m in service.models})
        return Response(200, _ENCODER.encode(health))

    @router.route(
        "GET",
        "/metrics",
        summary="Prometheus metrics of this process.",
        tag="ops",
        responses={200: "text/plain"},
    )
    def metrics(req: Request) -> Response:
        return Response(200, generate_latest(), CONTENT_TYPE_LATEST)

    return router


def _model_detail(service: PredictionService, model: str) -> ModelDetail:
    registry = service.registry
    try:
        last = decisions(registry, model)
        versions = []
        for mv in registry.versions(model):
            live = registry.evaluation(mv).get("traffic", {})
            parent = mv.metadata.get("parent_version")
            versions.append(
                VersionDetail(
                    version=mv.version,
                    stage=mv.stage,
                    serving=mv.version == service.version(model),
                    shadow=mv.version == service.shadow_version(model),
                    origin=mv.metadata.get("origin"),
                    created_at=mv.metadata.get("created_at"),
                    learner=mv.metadata.get("learner"),
                    parent_version=None if parent is None else int(parent),
                    metrics=mv.metadata.get("metrics") or {},
                    evaluation={
                        t: msgspec.convert(r, TrafficFigures) for t, r in sorted(live.items())
                    },
                    decision=last.get(mv.version),
                )
            )
    except (ModelError, msgspec.ValidationError) as exc:
        raise RegistryUnavailable(f"registry error: {exc}") from None
    return ModelDetail(
        model, service.kind(model), service.version(model), service.shadow_version(model), versions
    )


def _models(service: PredictionService) -> ModelsReply:
    out = []
    for model in service.models:
        try:
            versions = [
                VersionInfo(
                    mv.version,
                    mv.stage,
                    mv.metadata.get("created_at"),
                    mv.metadata.get("learner"),
                )
                for mv in service.registry.versions(model)
            ]
        except ModelError as exc:
            raise RegistryUnavailable(f"registry error: {exc}") from None
        out.append(ModelInfo(model, service.kind(model), service.version(model), versions))
    return ModelsReply(out)
