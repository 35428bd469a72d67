"""The exception tree of ``offline``: one root, a subclass per kind of failure."""

from __future__ import annotations


class OfflineError(Exception):
    """Root of every error raised by the ``offline`` package."""


class RangeError(OfflineError):
    """A replay bound (offset, timestamp, partition) is malformed or out of range."""


class DatasetError(OfflineError):
    """A dataset (Parquet + manifest, JSONL, CSV, image folder) is missing or malformed."""


class FlowError(OfflineError):
    """A workflow step failed, or a step was asked to run without its upstream outputs."""
