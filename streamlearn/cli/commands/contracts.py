"""``streamlearn contracts export``: the record contracts as JSON Schema files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.streams.schemas import export


def register(app: typer.Typer) -> None:
    """Add the ``contracts`` group."""
    group = typer.Typer(help="The record contracts (JSON Schema).", no_args_is_help=True)
    app.add_typer(group, name="contracts")

    @group.command("export")
    def export_cmd(
        directory: Annotated[
            Path,
            typer.Argument(
                envvar="STREAMLEARN_CONTRACTS_DIR",
                help="Where to write one <record>.schema.json per contract.",
            ),
        ],
        project_dir: o.ProjectDir = None,
    ) -> None:
        """Write a JSON Schema (draft 2020-12) for every record contract of the project
        (its activity events with its event types, surfaces and fields)."""
        for path in export(directory, o.open_project(project_dir).schema):
            typer.echo(str(path))
