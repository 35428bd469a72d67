"""``streamlearn replay``: topic ranges → a Parquet dataset with a manifest.

Also holds the small helpers the offline commands share (broker check, progress bar).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

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

from offline.errors import OfflineError
from offline.ranges import EARLIEST, LATEST, parse_bounds
from offline.replay import ReplayProgress, ReplaySpec, replay
from streamlearn import options as o

console = Console(stderr=True)


@contextmanager
def progress_bar(show: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr (disabled with ``show=False``)."""
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


def fail(exc: Exception) -> typer.Exit:
    """Print an offline error as one line and return the exit to raise."""
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


Quiet = Annotated[
    bool,
    typer.Option("--quiet", envvar="STREAMLEARN_QUIET", help="No progress bar."),
]


def register(app: typer.Typer) -> None:
    """Add ``replay``."""

    @app.command("replay")
    def replay_cmd(
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
        bootstrap_servers: o.BootstrapServers = None,
        topic_prefix: o.TopicPrefix = o.DEFAULT_PREFIX,
        partitions: o.Partitions = o.DEFAULT_PARTITIONS,
        kafka_option: o.KafkaOptions = None,
        quiet: Quiet = False,
    ) -> None:
        """Replay topic ranges into a Parquet dataset; print its manifest summary."""
        kafka = o.require_kafka(bootstrap_servers, topic_prefix, partitions, kafka_option)
        try:
            spec = ReplaySpec(
                tuple(topic),
                start=parse_bounds(from_ or [], EARLIEST),
                end=parse_bounds(to or [], LATEST),
                format=fmt,
                row_group_rows=row_group_rows,
            )
            with progress_bar(not quiet) as bar:
                tasks: dict[tuple[str, int], TaskID] = {}

                def on_progress(p: ReplayProgress) -> None:
                    key = (p.topic, p.partition)
                    if key not in tasks:
                        tasks[key] = bar.add_task(f"{p.topic}[{p.partition}]", total=None, note="")
                    bar.update(
                        tasks[key], completed=p.done, total=p.total, note=f"{p.records} rows"
                    )

                manifest = replay(kafka, spec, out, overwrite=overwrite, progress=on_progress)
        except OfflineError as exc:
            raise fail(exc) from None
        summary = {k: manifest[k] for k in ("records", "rejected", "checksum", "format")}
        typer.echo(json.dumps({"out": str(out), **summary}))
