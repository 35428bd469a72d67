"""Requests, responses and a small router for the HTTP API.

A route is a method, a path template (``/v1/models/{model}:predict``: a ``{name}``
matches one path segment up to ``/`` or ``:``) and a handler taking a :class:`Request`
and returning a :class:`Response` (a plain function, or a coroutine function for work
that waits, such as registry writes). Routes also name the msgspec types of their
bodies, from which :mod:`streamlearn.serving.openapi` builds the OpenAPI document. A module adds
its endpoints with :meth:`Router.route`; :meth:`Router.include` merges routers.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import msgspec

from streamlearn.serving.errors import MethodNotAllowed, NotFound

JSON: Final = "application/json"
_PARAM = re.compile(r"\{([a-z_]+)\}")
#: How many matched templated paths the router keeps (a path is looked up, not matched,
#: the next time); past it they are forgotten together.
MATCHES_KEPT: Final = 1024
_NO_PARAMS: Final[Mapping[str, str]] = MappingProxyType({})


class Request(msgspec.Struct, frozen=True):
    """One HTTP request: ``headers`` has lower-case names; ``params`` the path's values.

    A msgspec struct rather than a frozen dataclass: every request makes one and its
    :class:`Response`, and a struct is made in C (0.14 against 0.82 µs here).
    """

    method: str
    path: str
    params: Mapping[str, str]
    headers: Mapping[bytes, bytes]
    body: bytes = b""
    query: str = ""


class Response(msgspec.Struct, frozen=True):
    """One HTTP response; ``close`` closes the connection after it."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


Handler = Callable[[Request], Response | Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """A method and path template, its handler, and what it reads and answers (for docs)."""

    method: str
    template: str
    handler: Handler
    summary: str
    tag: str
    request: Any = None
    responses: Mapping[int, Any] = field(default_factory=dict)
    auth: bool = False
    is_async: bool = False
    pattern: re.Pattern[str] | None = None


class Router:
    """Routes by method and path: static paths by one dict lookup, templates by regex."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: list[Route] = []
        self._matched: dict[tuple[str, str], tuple[Route, Mapping[str, str]]] = {}

    def route(
        self,
        method: str,
        template: str,
        *,
        summary: str,
        tag: str,
        request: Any = None,
        responses: Mapping[int, Any] | None = None,
        auth: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator adding ``handler`` for ``method template``.

        ``request`` is the msgspec type of the body (a tuple: one of several), and a route
        without one reads no body; ``responses`` maps status codes to the type of their
        body (``None``: no body; ``"text/plain"``: text); ``auth``: needs a bearer token.
        """

        def add(handler: Handler) -> Handler:
            self.add(
                Route(
                    method,
                    template,
                    handler,
                    summary,
                    tag,
                    request,
                    dict(responses or {}),
                    auth,
                    inspect.iscoroutinefunction(handler),
                    _compile(template),
                )
            )
            return handler

        return add

    def add(self, route: Route) -> None:
        """Add one route."""
        if any(r.method == route.method and r.template == route.template for r in self.routes):
            raise ValueError(f"expected one route per method and path, got {route.template} twice")
        self.routes.append(route)
        self._matched.clear()
        if route.pattern is None:
            self._static[(route.method, route.template)] = route
        else:
            self._dynamic.append(route)

    def include(self, other: Router) -> None:
        """Add every route of ``other``."""
        for route in other.routes:
            self.add(route)

    def match(self, method: str, path: str) -> tuple[Route, Mapping[str, str]]:
        """The route for ``method path`` and its path values.

        Raises :class:`NotFound` (saying which paths exist under the same prefix) or
        :class:`MethodNotAllowed` (saying which methods the path takes).
        """
        route = self._static.get((method, path))
        if route is not None:
            return route, _NO_PARAMS
        matched = self._matched.get((method, path))
        if matched is not None:
            return matched
        allowed: list[str] = []
        for r in self._dynamic:
            assert r.pattern is not None
            m = r.pattern.match(path)
            if m is not None:
                if r.method == method:
                    if len(self._matched) >= MATCHES_KEPT:
                        self._matched.clear()
                    matched = self._matched[(method, path)] = (r, MappingProxyType(m.groupdict()))
                    return matched
                allowed.append(r.method)
        allowed += [m for (m, p) in self._static if p == path]
        if allowed:
            raise MethodNotAllowed(
                f"expected {' or '.join(sorted(set(allowed)))} for {path}, got {method}"
            )
        raise NotFound(f"expected {self._near(method, path)}, got {method} {path}")

    def _near(self, method: str, path: str) -> str:
        prefix = "/" + path.lstrip("/").split("/", 1)[0]
        same = [r.template for r in self.routes if r.method == method]
        near = [t for t in same if t.startswith(prefix)] or same
        return f"{method} " + (", ".join(near) if near else "(no such method here)")


def _compile(template: str) -> re.Pattern[str] | None:
    if "{" not in template:
        return None
    parts = _PARAM.split(template)
    regex = "".join(f"(?P<{p}>[^/:]+)" if i % 2 else re.escape(p) for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")
