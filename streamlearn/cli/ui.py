"""The CLI's glue: the console on stderr, progress bars, and the error edge.

Every command prints what it produces on stdout and everything else (progress, notes,
the one ``error: …`` line) through :data:`console` on stderr. An expected failure is a
:class:`streamlearn.models.errors.StreamlearnError` raised anywhere below; :class:`ErrorMapping`
(the root command group, see :mod:`streamlearn.cli.root`) turns it into one line and the class's
``exit_code`` — the tree and its codes are drawn in :mod:`streamlearn.models.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from typer.core import TyperGroup

from streamlearn.models.errors import StreamlearnError
from streamlearn.models.extras import missing_extra

if TYPE_CHECKING:
    from streamlearn.offline.replay import ReplayProgress

#: Progress, notes and errors (stdout is the commands' output).
console = Console(stderr=True)


def error(message: object) -> None:
    """Print ``error: message`` as one line on stderr (never wrapped, no markup read)."""
    console.print(Text.assemble(("error:", "red"), " ", str(message)), soft_wrap=True)


def fail(message: object, exit_code: int = 2) -> typer.Exit:
    """Print ``message`` as one error line; return the exit to raise (for failures that
    are not a :class:`StreamlearnError`, e.g. an unreadable file the user named)."""
    error(message)
    return typer.Exit(exit_code)


class ErrorMapping(TyperGroup):
    """A command group that answers every :class:`StreamlearnError` of its commands with
    one error line and the class's exit code, and an import of a missing extra's module as
    the :class:`~streamlearn.models.errors.MissingExtra` it means; anything else stays a
    traceback (a bug)."""

    # typer.Context: typer vendors Click (its types are not public), this is its subclass
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except StreamlearnError as exc:
            raise fail(exc, exc.exit_code) from None
        except ModuleNotFoundError as exc:
            mapped = missing_extra(exc, f"streamlearn {ctx.invoked_subcommand or ''}".strip())
            if mapped is None:
                raise
            raise fail(mapped, mapped.exit_code) from None


@contextmanager
def progress_bar(show: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr (disabled with ``show=False``); tasks take a
    ``note`` field shown after the elapsed time."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not show,
    ) as bar:
        yield bar


def replay_progress(bar: Progress, prefix: str = "") -> Callable[[ReplayProgress], None]:
    """A replay's progress callback: one task per topic partition on ``bar``."""
    tasks: dict[tuple[str, int], TaskID] = {}

    def on_progress(p: ReplayProgress) -> None:
        key = (p.topic, p.partition)
        if key not in tasks:
            tasks[key] = bar.add_task(f"{prefix}{p.topic}[{p.partition}]", total=None, note="")
        bar.update(tasks[key], completed=p.done, total=p.total, note=f"{p.records} rows")

    return on_progress
