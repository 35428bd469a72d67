"""Exceptions of the prediction service: one root, each class carries its HTTP answer.

The HTTP edge maps any :class:`ServingError` to a response with one lookup
(``exc.status``, ``exc.headers``, ``exc.close``); the message is the JSON body's
``"error"``, saying what was expected and what was got. The tree::

    ServingError                  500  root; anything unexpected in serving
    ├── BadRequest                400  malformed body, wrong shape, bad value
    ├── Unauthorized              401  admin call without the right bearer token
    ├── NotFound                  404  no such path
    │   ├── ModelNotFound         404  the model is not served here
    │   ├── VersionNotFound       404  the version is not in the registry, or not the one serving
    │   └── AdminDisabled         404  admin endpoints are off (no token configured)
    ├── MethodNotAllowed          405  the path exists, the method does not
    ├── RequestTimeout            408  the request did not arrive in time (connection closed)
    ├── Conflict                  409  a stage change that the registry's state forbids
    ├── LengthRequired            411  no Content-Length (connection closed)
    ├── PayloadTooLarge           413  body over the limit (connection closed)
    ├── HeadersTooLarge           431  request line and headers over the limit (connection closed)
    ├── Unavailable               503  try again later (``Retry-After: 1``)
    │   ├── ModelNotReady         503  the model has no version loaded yet
    │   └── Overloaded            503  over the connection cap (connection closed)
    ├── RegistryUnavailable       500  the registry cannot be read
    └── SnapshotRejected          500  a version failed to load; never an answer, the old one serves

Errors of the lower layers are translated where they are caught (a
:class:`streams.errors.ContractError` from decoding becomes a :class:`BadRequest`), so the
edge sees only this tree.
"""

from __future__ import annotations

from typing import ClassVar


class ServingError(Exception):
    """Root of every error raised by :mod:`serving`: answered as ``status``."""

    status: ClassVar[int] = 500
    #: Extra response headers.
    headers: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Close the connection after answering (the request stream may be out of sync).
    close: ClassVar[bool] = False


class BadRequest(ServingError):
    """The request is malformed; the message says what was expected and what was got."""

    status = 400


class Unauthorized(ServingError):
    """An admin call without a bearer token, or with a wrong one."""

    status = 401
    headers = (("WWW-Authenticate", 'Bearer realm="streamlearn-admin"'),)


class NotFound(ServingError):
    """No such path."""

    status = 404


class ModelNotFound(NotFound):
    """The request names a model this server does not serve."""


class VersionNotFound(NotFound):
    """The version does not exist, or cannot be asked for here (only the serving one can)."""


class AdminDisabled(NotFound):
    """Admin endpoints are off because no admin token is configured."""


class MethodNotAllowed(ServingError):
    """The path exists, but not with this method."""

    status = 405


class RequestTimeout(ServingError):
    """The request's headers or body did not arrive within the request time-out."""

    status = 408
    close = True


class Conflict(ServingError):
    """A stage change the registry's state forbids (nothing to roll back to, …)."""

    status = 409


class LengthRequired(ServingError):
    """A body without a Content-Length header."""

    status = 411
    close = True


class PayloadTooLarge(ServingError):
    """A body over the configured limit."""

    status = 413
    close = True


class HeadersTooLarge(ServingError):
    """A request line plus headers over the configured limit."""

    status = 431
    close = True


class Unavailable(ServingError):
    """The server cannot answer now; the client should retry shortly."""

    status = 503
    headers = (("Retry-After", "1"),)


class ModelNotReady(Unavailable):
    """The model is served here but no version has been loaded yet."""


class Overloaded(Unavailable):
    """More connections than the cap: answered, then closed."""

    close = True


class RegistryUnavailable(ServingError):
    """The model registry cannot be read (a disk or permission problem on the server)."""


class SnapshotRejected(ServingError):
    """A model version failed to load, warm up or validate; the old session keeps serving."""
