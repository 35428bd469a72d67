"""Admin over HTTP: promote, roll back and reject model versions, with a bearer token.

* ``POST /v1/models/{model}/versions/{version}:promote`` — make ``version`` production;
* ``POST /v1/models/{model}:rollback`` — re-promote the production version before;
* ``POST /v1/models/{model}/versions/{version}:reject[?reason=…]`` — never serve it.

They call the same stage functions as ``streamlearn models promote|rollback|reject``
(:mod:`streamlearn.models.stages`, history included), then make this server serve the new serving
version at once and announce the change on ``model-updates`` so other replicas follow
without waiting for their registry poll. Each answers
``{"model", "action", "version", "previous", "serving_version"}``.

Every call needs ``Authorization: Bearer <token>``, compared with the configured token
in constant time (:func:`hmac.compare_digest`); a missing or wrong one gets 401. With no
token configured the endpoints are off and answer 404, as a path that does not exist
would: off means absent, so a server without a token gives nothing to probe or guess
at (403 would say "this exists, but not for you"). The message says how to turn them on.
Authorisation is checked before anything else, so an unauthorised caller learns
nothing about models or versions.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs

import msgspec
from pydantic import SecretStr

from streamlearn.models.errors import RegistryError
from streamlearn.models.stages import StageChange, promote, reject, rollback
from streamlearn.serving.errors import AdminDisabled, ModelNotFound, Unauthorized, VersionNotFound
from streamlearn.serving.routing import Request, Response, Router
from streamlearn.serving.schema import ErrorReply, StageReply
from streamlearn.serving.service import PredictionService
from streamlearn.streams.contracts import ModelUpdate, stage_update

log = logging.getLogger(__name__)

TAG: Final = "admin"
#: The environment variable the CLI reads the token from (named in the 404 message).
TOKEN_ENV: Final = "STREAMLEARN_SERVE_ADMIN_TOKEN"
_RESPONSES: Final = {
    200: StageReply,
    401: ErrorReply,
    404: ErrorReply,
    409: ErrorReply,
}
_ENCODER: Final = msgspec.json.Encoder()


def admin_routes(
    service: PredictionService,
    token: SecretStr | None,
    refresh: Callable[[str], object],
    announce: Callable[[ModelUpdate], None] | None = None,
) -> Router:
    """The admin routes; ``refresh(model)`` loads the model's serving version now."""
    router = Router()
    secret = None if token is None else token.get_secret_value().encode()
    registry = service.registry

    def authorize(req: Request) -> None:
        if not secret:
            raise AdminDisabled(
                f"admin endpoints are off: expected {TOKEN_ENV} to be set when serving "
                "starts, got no token"
            )
        scheme, _, given = req.headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), secret):
            raise Unauthorized(
                "expected Authorization: Bearer <admin token>, got none or a wrong one"
            )

    def served(req: Request) -> str:
        model = req.params["model"]
        if model not in service.models:
            raise ModelNotFound(f"expected a model among {list(service.models)}, got {model!r}")
        return model

    def existing(model: str, raw: str) -> int:
        if not raw.isdigit():
            raise VersionNotFound(f"expected an integer version, got {raw!r}")
        try:
            return registry.get(model, int(raw)).version
        except RegistryError as exc:
            raise VersionNotFound(str(exc)) from None

    def apply(model: str, change: Callable[[], StageChange]) -> Response:
        done = change()  # a StageError is answered 409 by the edge
        refresh(model)
        if announce is not None:
            metrics = registry.get(model, done.version).metadata.get("metrics") or {}
            announce(stage_update(model, done.version, done.stage, done.previous, metrics))
        log.info(
            "admin %s model=%s version=%d previous=%s: serving version %s",
            done.action,
            model,
            done.version,
            done.previous,
            service.version(model),
        )
        reply = StageReply(model, done.action, done.version, done.previous, service.version(model))
        return Response(200, _ENCODER.encode(reply))

    @router.route(
        "POST",
        "/v1/models/{model}/versions/{version}:promote",
        summary="Make a version production (bearer token).",
        tag=TAG,
        responses=_RESPONSES,
        auth=True,
    )
    async def promote_version(req: Request) -> Response:
        authorize(req)
        model = served(req)

        def run() -> Response:
            version = existing(model, req.params["version"])
            return apply(model, lambda: promote(registry, model, version))

        return await asyncio.to_thread(run)

    @router.route(
        "POST",
        "/v1/models/{model}:rollback",
        summary="Re-promote the production version before the current one (bearer token).",
        tag=TAG,
        responses=_RESPONSES,
        auth=True,
    )
    async def rollback_model(req: Request) -> Response:
        authorize(req)
        model = served(req)
        return await asyncio.to_thread(apply, model, lambda: rollback(registry, model))

    @router.route(
        "POST",
        "/v1/models/{model}/versions/{version}:reject",
        summary="Never serve a version again; ?reason= goes into the history (bearer token).",
        tag=TAG,
        responses=_RESPONSES,
        auth=True,
    )
    async def reject_version(req: Request) -> Response:
        authorize(req)
        model = served(req)
        reason = parse_qs(req.query).get("reason", [None])[0]

        def run() -> Response:
            version = existing(model, req.params["version"])
            return apply(model, lambda: reject(registry, model, version, reason))

        return await asyncio.to_thread(run)

    return router
