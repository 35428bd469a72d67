"""The ``streamlearn`` command line: one typer app, a module per command group."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import typer

import streamlearn.commands
from models.errors import ModelError
from offline.errors import OfflineError
from serving.errors import ServingError
from streams.errors import StreamsError

app = typer.Typer(
    name="streamlearn",
    help="Streaming online learning: features, online training and ONNX serving on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    for mod in pkgutil.iter_modules(streamlearn.commands.__path__):
        module = importlib.import_module(f"streamlearn.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


@app.callback()
def _root(
    log_level: str = typer.Option(
        "INFO", "--log-level", envvar="STREAMLEARN_LOG_LEVEL", help="Logging level."
    ),
) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


_register_commands()


#: Every package's root exception: expected failures (no broker, a bad file, a bad
#: model) end in one line on stderr and exit code 1, not a traceback.
_EXPECTED: tuple[type[Exception], ...] = (StreamsError, ModelError, ServingError, OfflineError)


def main() -> None:
    """Entry point of the ``streamlearn`` console script."""
    try:
        app()  # usage errors are handled (and exit 2) inside
    except _EXPECTED as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
