"""``streamlearn produce``: re-publish a dataset or a JSONL/CSV file into a topic, or a
historical log as a project's events (``--log``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.cli.ui import progress_bar
from streamlearn.offline.history import count_rows, produce_log
from streamlearn.offline.produce import produce_file
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics


def register(app: typer.Typer) -> None:
    """Add ``produce``."""

    @app.command("produce")
    @o.kafka_options()
    def produce_cmd(
        kafka_opts: o.KafkaOptions,
        source: Annotated[
            Path | None,
            typer.Argument(help="Replayed dataset dir, .parquet, .jsonl or .csv file."),
        ] = None,
        topic: Annotated[
            str | None,
            typer.Option(
                "--topic",
                "-t",
                envvar="STREAMLEARN_PRODUCE_TOPIC",
                help="Target topic (full name) of SOURCE; created if missing.",
            ),
        ] = None,
        log: Annotated[
            Path | None,
            typer.Option(
                "--log",
                envvar="STREAMLEARN_PRODUCE_LOG",
                help="A historical log (CSV, Parquet or JSON lines, with a time column) to "
                "publish as the project's events on its activity topic, each checked "
                "against the project's contract.",
            ),
        ] = None,
        project_dir: o.ProjectDir = None,
        time_column: Annotated[
            str,
            typer.Option(
                "--time-column",
                envvar="STREAMLEARN_PRODUCE_TIME_COLUMN",
                help="The time column of --log: epoch seconds or ISO 8601.",
            ),
        ] = "ts",
        speed: Annotated[
            float,
            typer.Option(
                "--speed",
                envvar="STREAMLEARN_PRODUCE_SPEED",
                min=0.0,
                help="Pace --log at this many times real time by its times (0: as fast as "
                "possible).",
            ),
        ] = 0.0,
        strict: Annotated[
            bool,
            typer.Option(
                "--strict",
                envvar="STREAMLEARN_PRODUCE_STRICT",
                help="Stop at the first row of --log that is not a valid event (default: "
                "count and skip it).",
            ),
        ] = False,
        summary_json: o.SummaryJson = None,
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
        """Send the records of SOURCE to a topic, keyed and rate limited; or a historical
        log (--log) as the project's events."""
        if log is not None:
            if source is not None or topic is not None:
                raise typer.BadParameter(
                    "--log publishes to the project's activity topic: "
                    "give SOURCE and --topic, or --log, not both"
                )
            project = o.open_project(project_dir)
            kafka = kafka_opts.config()
            topics = Topics(kafka.topic_prefix)
            ensure_loop_topics(kafka, topics, project.model_catalog.names)
            with progress_bar(not quiet) as bar:
                task = bar.add_task(
                    f"{log.name} → {topics.activity}", total=count_rows(log), note=""
                )
                logged = produce_log(
                    kafka,
                    topics.activity,
                    project.schema,
                    log,
                    time_column=time_column,
                    speed=speed,
                    strict=strict,
                    limit=limit,
                    progress=lambda n: bar.update(task, completed=n),
                )
            summary = logged.summary()
            if summary_json is not None:
                summary_json.parent.mkdir(parents=True, exist_ok=True)
                summary_json.write_text(json.dumps(summary, indent=2) + "\n")
            typer.echo(json.dumps(summary))
            return
        if source is None or topic is None:
            raise typer.BadParameter("expected SOURCE and --topic (or --log FILE)")
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
