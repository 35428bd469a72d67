"""The feature store's online reads over HTTP: definitions and current values.

* ``GET /v1/features`` — every declared feature:
  ``{"features": [{"name", "entity", "type", "description", "owner", "version"}, …]}``;
* ``GET /v1/features/{entity}/{id}`` — one entity's current values:
  ``{"entity", "id", "values": {…}, "as_of"}``, item partials merged, request-time
  features computed at the read, ``as_of`` the event time (epoch seconds) of the newest
  event the values reflect; 404 for an unknown entity kind or an id with no features;
* ``POST /v1/features:read`` — many entities at once: ``{"entities": [{"entity", "id"},
  …]}`` (1 to :data:`~streamlearn.streams.features.store.MAX_READ_ENTITIES`) →
  ``{"entities": [{"entity", "id", "values", "as_of"}, …]}`` in request order, with
  ``values`` and ``as_of`` null for an id with no features.

Values come from serving's local replica of the ``features`` topic, the same store a
prediction reads, so they are what a request scored now would see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import msgspec

from streamlearn.serving.errors import BadRequest, NotFound
from streamlearn.serving.metrics import FEATURE_READS
from streamlearn.serving.routing import Request, Response, Router
from streamlearn.serving.schema import (
    EntityRead,
    ErrorReply,
    FeatureInfo,
    FeaturesReadReply,
    FeaturesReadRequest,
    FeaturesReply,
)
from streamlearn.streams.catalog.features import FeatureCatalog
from streamlearn.streams.contracts import Scalar
from streamlearn.streams.features.store import MAX_READ_ENTITIES, EntityFeatures, entity_features

TAG: Final = "features"
_ENCODER: Final = msgspec.json.Encoder()
_READ_DECODER: Final = msgspec.json.Decoder(FeaturesReadRequest)


def _read_shape(entities: list[str]) -> str:
    names = " | ".join(f'"{e}"' for e in entities)
    return (
        f'expected {{"entities": [{{"entity": {names}, "id": str}}, ...]}} with 1 to '
        f"{MAX_READ_ENTITIES} entities"
    )


class StoredFeatures(Protocol):
    """Where current values are read: serving's feature replica."""

    def stored(self, entity: str, entity_id: str) -> Mapping[str, Scalar] | None:
        """An entity's stored values, or ``None``."""
        ...


def feature_routes(
    store: StoredFeatures,
    catalog: FeatureCatalog,
    clock: Callable[[], float] = time.time,
) -> Router:
    """The ``/v1/features`` routes over ``store``."""
    router = Router()
    entity_keys = catalog.schema.entity_keys
    shape = _read_shape(list(entity_keys))
    listing = _ENCODER.encode(
        FeaturesReply(
            [
                FeatureInfo(f.name, f.entity, f.type, f.description, f.owner, f.version)
                for f in catalog
            ]
        )
    )

    def read(entity: str, entity_id: str, now: float) -> EntityFeatures | None:
        found = entity_features(entity, entity_id, store.stored(entity, entity_id), now, catalog)
        FEATURE_READS.labels("found" if found is not None else "missing").inc()
        return found

    @router.route(
        "GET",
        "/v1/features",
        summary="Every declared feature: name, entity, type, description, owner, version.",
        tag=TAG,
        responses={200: FeaturesReply},
    )
    def definitions(req: Request) -> Response:
        return Response(200, listing)

    @router.route(
        "GET",
        "/v1/features/{entity}/{id}",
        summary="One entity's current feature values (partials merged).",
        tag=TAG,
        responses={200: EntityFeatures, 404: ErrorReply},
    )
    def one(req: Request) -> Response:
        entity, entity_id = req.params["entity"], req.params["id"]
        if entity not in entity_keys:
            raise NotFound(f"expected entity among {sorted(entity_keys)}, got {entity!r}")
        found = read(entity, entity_id, clock())
        if found is None:
            raise NotFound(
                f"expected a {entity} with stored features, got unknown id {entity_id!r}"
            )
        return Response(200, _ENCODER.encode(found))

    @router.route(
        "POST",
        "/v1/features:read",
        summary=f"Current feature values of many entities (at most {MAX_READ_ENTITIES}).",
        tag=TAG,
        request=FeaturesReadRequest,
        responses={200: FeaturesReadReply, 400: ErrorReply, 411: ErrorReply, 413: ErrorReply},
    )
    async def many(req: Request) -> Response:
        try:
            body = _READ_DECODER.decode(req.body)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise BadRequest(f"{shape}; got: {exc}") from None
        n = len(body.entities)
        if not 1 <= n <= MAX_READ_ENTITIES:
            raise BadRequest(f"{shape}; got {n}")
        unknown = sorted({e.entity for e in body.entities} - set(entity_keys))
        if unknown:
            raise BadRequest(f"{shape}; got entity {unknown[0]!r}")
        # RocksDB reads: a large batch would hold the event loop for milliseconds
        reply = await asyncio.to_thread(_read_all, read, body, clock())
        return Response(200, _ENCODER.encode(reply))

    return router


def _read_all(
    read: Callable[[str, str, float], EntityFeatures | None],
    body: FeaturesReadRequest,
    now: float,
) -> FeaturesReadReply:
    out = []
    for ref in body.entities:
        found = read(ref.entity, ref.id, now)
        if found is None:
            out.append(EntityRead(ref.entity, ref.id, None, None))
        else:
            out.append(EntityRead(ref.entity, ref.id, found.values, found.as_of))
    return FeaturesReadReply(out)
