"""What a running step sees besides its inputs and params."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamlearn.offline.errors import FlowError

T = TypeVar("T")


@dataclass(frozen=True)
class StepProgress:
    """Progress reported by a step (``total`` may be unknown)."""

    flow: str
    step: str
    done: int
    total: int | None
    note: str = ""


ProgressFn = Callable[[StepProgress], None]


def get_resource(resources: Mapping[str, Any], name: str, kind: type[T], why: str) -> T:
    """``resources[name]`` checked to be a ``kind``; a :class:`FlowError` saying ``why``."""
    value = resources.get(name)
    if value is None:
        raise FlowError(f"expected resource {name!r} ({kind.__name__}) {why}, got none")
    if not isinstance(value, kind):
        raise FlowError(
            f"expected resource {name!r} to be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


@dataclass(frozen=True)
class StepContext:
    """A step's view of its run.

    ``out`` is the step's cache directory: files written there live as long as the
    cached output. ``resources`` are things that are not params and not part of any
    cache key (a Kafka config, a registry). ``lineage()`` is the run record so far.
    """

    flow: str
    step: str
    run_id: str
    out: Path
    resources: Mapping[str, Any]
    lineage: Callable[[], dict[str, Any]]
    on_progress: ProgressFn | None = None

    def resource(self, name: str, kind: type[T], why: str = "") -> T:
        """The resource ``name``, checked to be a ``kind`` (see :func:`get_resource`)."""
        return get_resource(self.resources, name, kind, why or f"for step {self.step!r}")

    def progress(self, done: int, total: int | None = None, note: str = "") -> None:
        """Report progress to whoever runs the flow (a progress bar)."""
        if self.on_progress is not None:
            self.on_progress(StepProgress(self.flow, self.step, done, total, note))
