"""Exceptions of the learning layer: one root, a few specific subclasses."""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error raised by :mod:`models`."""


class FeatureError(ModelError):
    """A feature spec or an input row is not what the featuriser expects."""


class SnapshotError(ModelError):
    """A snapshot cannot be built, exported or read back."""


class RegistryError(ModelError):
    """The model registry cannot find, publish or stage a model version."""


class StageError(RegistryError):
    """A model version cannot be promoted, rolled back or rejected in the registry's state."""
