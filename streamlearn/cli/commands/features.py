"""``streamlearn features list|export``: the declared features, and point-in-time sets."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamlearn.cli import options as o
from streamlearn.offline.point_in_time import export
from streamlearn.offline.tables import read_table


class SourceName(StrEnum):
    """Where the export rebuilds feature values from."""

    activity = "activity"
    features = "features"


def register(app: typer.Typer) -> None:
    """Add the ``features`` group."""
    group = typer.Typer(
        help="The feature store: declared features, point-in-time training sets.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="features")
    group.command("list")(list_cmd)
    group.command("export")(export_cmd)


def list_cmd(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", envvar="STREAMLEARN_FEATURES_JSON", help='{"features": [...]} on stdout.'
        ),
    ] = False,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            envvar="STREAMLEARN_FEATURES_MARKDOWN",
            help="The Markdown table (the docs').",
        ),
    ] = False,
    project_dir: o.ProjectDir = None,
) -> None:
    """Every feature the project declares: name, entity, type, description, owner,
    version."""
    catalog = o.open_project(project_dir).catalog
    if as_json:
        typer.echo(json.dumps({"features": catalog.info()}, indent=1))
        return
    if markdown:
        typer.echo(catalog.markdown(), nl=False)
        return
    table = Table("name", "entity", "type", "description", "owner", "version")
    for f in catalog:
        table.add_row(f.name, f.entity, f.type, f.description + f.note(), f.owner, str(f.version))
    Console().print(table)  # stdout: the listing is the command's output


@o.kafka_options(partitions=False)
def export_cmd(
    kafka_opts: o.KafkaOptions,
    entities: Annotated[
        Path,
        typer.Option(
            "--entities",
            envvar="STREAMLEARN_FEATURES_ENTITIES",
            help="CSV, JSONL or Parquet file: entity key columns (user_id, item_id, …) and a "
            "time column.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", envvar="STREAMLEARN_FEATURES_OUT", help="Parquet file to write."
        ),
    ],
    time_column: Annotated[
        str,
        typer.Option(
            "--time-column",
            envvar="STREAMLEARN_FEATURES_TIME_COLUMN",
            help="Column of the row times: epoch seconds, timestamps or ISO 8601 strings.",
        ),
    ] = "ts",
    source: Annotated[
        SourceName,
        typer.Option(
            "--source",
            envvar="STREAMLEARN_FEATURES_SOURCE",
            help="activity: re-aggregate the activity topic (exact); features: the "
            "changelog (what the online store held, at commit granularity).",
        ),
    ] = SourceName.activity,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            envvar="STREAMLEARN_FEATURES_DATASET",
            help="A replayed dataset of the source topic (`streamlearn replay`) to read "
            "instead of the broker.",
        ),
    ] = None,
    project_dir: o.ProjectDir = None,
) -> None:
    """Each entity row with its feature values as they stood strictly before its time."""
    project = o.open_project(project_dir)
    # a --dataset is read instead of the broker; the broker is needed without one
    kafka = kafka_opts.config() if dataset is None or kafka_opts.given else None
    result = export(
        read_table(entities),
        out,
        time_column=time_column,
        source=source.value,
        kafka=kafka,
        dataset=dataset,
        catalog=project.catalog,
    )
    typer.echo(json.dumps(result.summary()))
