"""The exceptions of the prediction service: one root under
:class:`streamlearn.models.errors.StreamlearnError`, whose docstring draws the whole tree with each
class's HTTP status.

The HTTP edge (:class:`streamlearn.serving.http.ServingAPI`) maps any
:class:`~streamlearn.models.errors.StreamlearnError` to a response with one lookup (``exc.status``,
``exc.headers``, ``exc.close``); the message is the JSON body's ``"error"``, saying what
was expected and what was got. Lower layers' errors that need another status or message
are translated where they are caught (a :class:`streamlearn.streams.errors.ContractError` from a
request body becomes a :class:`BadRequest` naming the field).
"""

from __future__ import annotations

from streamlearn.models.errors import StreamlearnError


class ServingError(StreamlearnError):
    """Root of every error raised by :mod:`serving`: answered as ``status``."""


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
