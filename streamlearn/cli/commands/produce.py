"""``streamlearn produce``: re-publish a dataset or a JSONL/CSV file into a topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.cli.ui import progress_bar
from streamlearn.offline.produce import produce_file


def register(app: typer.Typer) -> None:
    """Add ``produce``."""

    @app.command("produce")
    @o.kafka_options()
    def produce_cmd(
        kafka_opts: o.KafkaOptions,
        source: Annotated[
            Path,
            typer.Argument(help="Replayed dataset dir, .parquet, .jsonl or .csv file."),
        ],
        topic: Annotated[
            str,
            typer.Option(
                "--topic",
                "-t",
                envvar="STREAMLEARN_PRODUCE_TOPIC",
                help="Target topic (full name); created if missing.",
            ),
        ],
        rate: Annotated[
            float,
            typer.Option(
                "--rate",
                envvar="STREAMLEARN_PRODUCE_RATE",
                min=0,
                help="Records per second (0: as fast as possible).",
            ),
        ] = 0.0,
        key_field: Annotated[
            str,
            typer.Option(
                "--key-field",
                envvar="STREAMLEARN_PRODUCE_KEY_FIELD",
                help="Record field used as the message key.",
            ),
        ] = "user_id",
        limit: Annotated[
            int | None,
            typer.Option(
                "--limit",
                envvar="STREAMLEARN_PRODUCE_LIMIT",
                min=0,
                help="Send at most this many records.",
            ),
        ] = None,
        quiet: o.Quiet = False,
    ) -> None:
        """Send the records of SOURCE to a topic, keyed and rate limited."""
        kafka = kafka_opts.config()
        with progress_bar(not quiet) as bar:
            task = bar.add_task(f"→ {topic}", total=limit, note="")
            result = produce_file(
                kafka,
                source,
                topic,
                key_field=key_field,
                rate=rate,
                limit=limit,
                progress=lambda n: bar.update(task, completed=n),
            )
        typer.echo(
            json.dumps(
                {
                    "topic": topic,
                    "records": result.records,
                    "unkeyed": result.unkeyed,
                    "rate": round(result.rate, 1),
                }
            )
        )
