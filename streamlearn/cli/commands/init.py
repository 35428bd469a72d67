"""``streamlearn init DIR``: a new project, commented, that runs as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamlearn.cli.ui import console
from streamlearn.project.scaffold import SAMPLE_LOG, init, rewrite_sample_log


def register(app: typer.Typer) -> None:
    """Add ``init``."""

    @app.command("init")
    def init_cmd(
        directory: Annotated[
            Path, typer.Argument(help="Where to write the project (created if missing).")
        ],
        requests: Annotated[
            int,
            typer.Option(
                "--requests",
                envvar="STREAMLEARN_INIT_REQUESTS",
                min=1,
                help="Requests in the sample log (5 items shown each).",
            ),
        ] = 4000,
        log_only: Annotated[
            bool,
            typer.Option(
                "--log-only",
                envvar="STREAMLEARN_INIT_LOG_ONLY",
                help="Write only the sample log, for the project already in DIRECTORY (after "
                "editing its declarations: the log takes its first impression and engagement "
                "types and its first surface).",
            ),
        ] = False,
    ) -> None:
        """Write a new project: a commented project.py declaring its events, features and
        models, and a sample log to run it with."""
        if log_only:
            typer.echo(str(rewrite_sample_log(directory, requests=requests)))
            return
        for path in init(directory, requests=requests):
            typer.echo(str(path))
        log = directory / SAMPLE_LOG
        console.print(
            f"next: streamlearn up --project {directory} --log {log} --duration 60\n"
            f"then edit {directory / 'project.py'} to declare your own events and models"
        )
