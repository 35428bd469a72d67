"""The ``streamlearn`` command line: one typer app, a module per command group.

Command modules are imported when their command runs, not before: a process loads only
its own command's code, so it exports only its own Prometheus metric families (a
metric family is registered when the module defining it is imported). ``--help``
imports them all to list them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Final

import typer

from streamlearn import __version__
from streamlearn.cli.ui import ErrorMapping

#: Each top-level command (or group) → the module of ``streamlearn.cli.commands`` whose
#: ``register(app)`` adds it (``tests/unit/test_cli.py`` checks the table is complete).
COMMANDS: Final[dict[str, str]] = {
    "contracts": "contracts",
    "eval": "eval",
    "features": "features",
    "flow": "flow",
    "init": "init",
    "models": "models",
    "offline": "offline",
    "produce": "produce",
    "replay": "replay",
    "serve": "serve",
    "simulate": "simulate",
    "train": "worker",
    "up": "up",
    "worker": "worker",
}


def load_commands(module: str) -> Any:
    """The commands ``streamlearn.cli.commands.<module>`` registers, as a Click group."""
    scratch = typer.Typer()

    @scratch.callback()
    def _group() -> None:  # keeps a lone command a sub-command
        pass

    importlib.import_module(f"streamlearn.cli.commands.{module}").register(scratch)
    return typer.main.get_command(scratch)


class Commands(ErrorMapping):
    """The root group: commands loaded on first use (:data:`COMMANDS`), errors mapped
    once (:class:`streamlearn.cli.ui.ErrorMapping`)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            command = load_commands(COMMANDS[cmd_name]).get_command(ctx, cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return command


app = typer.Typer(
    name="streamlearn",
    cls=Commands,
    help="Streaming online learning: features, online training and ONNX serving on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(show: bool) -> None:
    if show:
        typer.echo(f"streamlearn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: str = typer.Option(
        "INFO", "--log-level", envvar="STREAMLEARN_LOG_LEVEL", help="Logging level."
    ),
    _version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Entry point of the ``streamlearn`` console script (usage errors exit 2; expected
    failures end in one error line and their class's exit code:
    :mod:`streamlearn.models.errors`)."""
    app()
