"""``streamlearn replay``: topic ranges → a Parquet dataset with a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.cli.ui import progress_bar, replay_progress
from streamlearn.offline.ranges import EARLIEST, LATEST, parse_bounds
from streamlearn.offline.replay import ReplaySpec, replay


def register(app: typer.Typer) -> None:
    """Add ``replay``."""

    @app.command("replay")
    @o.kafka_options()
    def replay_cmd(
        kafka_opts: o.KafkaOptions,
        topic: Annotated[
            list[str],
            typer.Option(
                "--topic",
                "-t",
                envvar="STREAMLEARN_REPLAY_TOPICS",
                help="Topic to replay (repeatable; full name, prefix included).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                "-o",
                envvar="STREAMLEARN_REPLAY_OUT",
                help="Dataset directory to write (data.parquet, manifest.json, rejected.jsonl).",
            ),
        ],
        from_: Annotated[
            list[str] | None,
            typer.Option(
                "--from",
                envvar="STREAMLEARN_REPLAY_FROM",
                help="Start (inclusive): earliest, OFFSET, ISO time, @EPOCH_S; "
                "prefix PARTITION: for one partition (repeatable). Default earliest.",
            ),
        ] = None,
        to: Annotated[
            list[str] | None,
            typer.Option(
                "--to",
                envvar="STREAMLEARN_REPLAY_TO",
                help="End (exclusive): latest, OFFSET, ISO time, @EPOCH_S; "
                "prefix PARTITION: for one partition (repeatable). Default latest "
                "(the high watermark seen by the replay's fetches).",
            ),
        ] = None,
        fmt: Annotated[
            str,
            typer.Option(
                "--format",
                envvar="STREAMLEARN_REPLAY_FORMAT",
                help="auto | event | training | json (auto: from the topic name).",
            ),
        ] = "auto",
        row_group_rows: Annotated[
            int,
            typer.Option(
                "--row-group-rows",
                envvar="STREAMLEARN_REPLAY_ROW_GROUP_ROWS",
                min=1,
                help="Rows per Parquet row group (bounds memory).",
            ),
        ] = 65_536,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite",
                envvar="STREAMLEARN_REPLAY_OVERWRITE",
                help="Replace an existing dataset directory.",
            ),
        ] = False,
        quiet: o.Quiet = False,
    ) -> None:
        """Replay topic ranges into a Parquet dataset; print its manifest summary."""
        kafka = kafka_opts.config()
        spec = ReplaySpec(
            tuple(topic),
            start=parse_bounds(from_ or [], EARLIEST),
            end=parse_bounds(to or [], LATEST),
            format=fmt,
            row_group_rows=row_group_rows,
        )
        with progress_bar(not quiet) as bar:
            manifest = replay(kafka, spec, out, overwrite=overwrite, progress=replay_progress(bar))
        summary = {k: manifest[k] for k in ("records", "rejected", "checksum", "format")}
        typer.echo(json.dumps({"out": str(out), **summary}))
