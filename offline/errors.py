"""The exceptions of ``offline``: one root under :class:`streamlearn.models.errors.StreamlearnError`
(whose docstring draws the whole tree, with each class's HTTP status and exit code).

Every offline error is about an input the user gave (a range, a dataset, a flow and its
params), so the CLI exits 2 on all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlearn.models.errors import StreamlearnError


class OfflineError(StreamlearnError):
    """Root of every error raised by the ``offline`` package."""

    exit_code = 2


class RangeError(OfflineError):
    """A replay bound (offset, timestamp, partition) is malformed or out of range."""

    status = 400


class DatasetError(OfflineError):
    """A dataset (Parquet + manifest, JSONL, CSV, image folder) is missing or malformed."""

    status = 400


class EvalError(DatasetError):
    """The evaluation file, a column or a label is not usable (``streamlearn eval``)."""


class FlowError(OfflineError):
    """A workflow step failed, or a step was asked to run without its upstream outputs."""


class FlowStepError(FlowError):
    """A step of a run raised; ``step`` names it and ``record`` is the run record."""

    def __init__(self, message: str, step: str, record: dict[str, Any], path: Path) -> None:
        super().__init__(message)
        self.step = step
        self.record = record
        self.path = path
