"""Exceptions of the prediction service: one root, one subclass per HTTP-visible failure."""

from __future__ import annotations


class ServingError(Exception):
    """Root of every error raised by :mod:`serving`."""


class ModelNotFound(ServingError):
    """The request names a model this server does not serve (HTTP 404)."""


class ModelNotReady(ServingError):
    """The model is served here but no version has been loaded yet (HTTP 503)."""


class BadRequest(ServingError):
    """The request is malformed; the message says what was expected and what was got (400)."""


class SnapshotRejected(ServingError):
    """A model version failed to load, warm up or validate; the old session keeps serving."""
