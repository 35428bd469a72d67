"""The OpenAPI 3.1 document of the HTTP API, generated from the routes and their types.

Every route names the msgspec types of its request and response bodies
(:meth:`streamlearn.serving.routing.Router.route`); their JSON Schemas come from
:func:`msgspec.json.schema_components`, so the document changes when the code does.
Served at ``GET /openapi.json``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import msgspec

from streamlearn.serving.routing import Route, Router

_REF: Final = "#/components/schemas/{name}"


def _types(spec: Any) -> list[Any]:
    if spec is None or isinstance(spec, str):
        return []
    return list(spec) if isinstance(spec, tuple) else [spec]


def openapi_document(router: Router, title: str, version: str) -> dict[str, Any]:
    """The document for every route of ``router``."""
    types: list[Any] = []
    for route in router.routes:
        for spec in (route.request, *route.responses.values()):
            types += [t for t in _types(spec) if t not in types]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), schemas, strict=True))

    def schema(spec: Any) -> dict[str, Any]:
        parts = [schema_of[id(t)] for t in _types(spec)]
        return parts[0] if len(parts) == 1 else {"oneOf": parts}

    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, schema)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Route, schema: Any) -> dict[str, Any]:
    names = [p.strip("{}") for p in route.template.replace(":", "/").split("/") if p[:1] == "{"]
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.method.lower()
        + "".join(c if c.isalnum() else "_" for c in route.template),
        "responses": {},
    }
    if names:
        op["parameters"] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    if route.request is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema(route.request)}},
        }
    if route.auth:
        op["security"] = [{"bearer": []}]
    for code, spec in sorted(route.responses.items()):
        answer: dict[str, Any] = {"description": HTTPStatus(code).phrase}
        if spec == "text/plain":
            answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif spec is not None:
            answer["content"] = {"application/json": {"schema": schema(spec)}}
        op["responses"][str(code)] = answer
    return op
