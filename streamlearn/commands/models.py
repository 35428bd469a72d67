"""``streamlearn models defs|list|promote|rollback|reject``: the declared models, registry
stages (announced to serving)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from models.registry import FileRegistry
from models.stages import StageChange, describe, promote, reject, rollback
from offline.promotion import announce
from streamlearn import options as o
from streamlearn.settings import data_dir
from streamlearn.ui import console
from streams.model_catalog import MODELS


def _announce(registry: FileRegistry, change: StageChange, kafka: o.KafkaOptions) -> None:
    if not kafka.given:
        console.print("no broker configured: serving picks the change up from the registry")
        return
    try:
        announce(kafka.config(), registry, change)
    except Exception as exc:  # the stage is already changed; the announcement is a hint
        console.print(f"[yellow]warning:[/yellow] stage changed, announcement failed: {exc}")


def register(app: typer.Typer) -> None:
    """Add the ``models`` group."""
    group = typer.Typer(help="Model versions and their stages.", no_args_is_help=True)
    app.add_typer(group, name="models")

    @group.command("defs")
    def defs_cmd() -> None:
        """The declared models (name, head, feature spec, learner, params, surfaces), one
        JSON object per line."""
        for definition in MODELS:
            typer.echo(json.dumps(definition.info()))

    @group.command("list")
    def list_cmd(
        model: Annotated[
            str | None, typer.Argument(help="Model name; all models when omitted.")
        ] = None,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
    ) -> None:
        """Versions with stage, serving flag and key metrics (one JSON object per line)."""
        registry = FileRegistry(data_dir(data) / "registry")
        for name in [model] if model else registry.models():
            for row in describe(registry, name):
                typer.echo(json.dumps({"model": name, **row}))

    @group.command("promote")
    @o.kafka_options(partitions=False)
    def promote_cmd(
        kafka_opts: o.KafkaOptions,
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version to make production.")],
        data: o.DataDir = o.DEFAULT_DATA_DIR,
    ) -> None:
        """Mark VERSION production (the previous production version is archived)."""
        registry = FileRegistry(data_dir(data) / "registry")
        change = promote(registry, model, version)
        _announce(registry, change, kafka_opts)
        typer.echo(
            json.dumps({"model": model, "production": change.version, "previous": change.previous})
        )

    @group.command("rollback")
    @o.kafka_options(partitions=False)
    def rollback_cmd(
        kafka_opts: o.KafkaOptions,
        model: Annotated[str, typer.Argument(help="Model name.")],
        data: o.DataDir = o.DEFAULT_DATA_DIR,
    ) -> None:
        """Re-promote the production version that preceded the current one."""
        registry = FileRegistry(data_dir(data) / "registry")
        change = rollback(registry, model)
        _announce(registry, change, kafka_opts)
        typer.echo(
            json.dumps({"model": model, "production": change.version, "previous": change.previous})
        )

    @group.command("reject")
    @o.kafka_options(partitions=False)
    def reject_cmd(
        kafka_opts: o.KafkaOptions,
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version never to serve.")],
        reason: Annotated[
            str | None,
            typer.Option(
                "--reason", envvar="STREAMLEARN_REJECT_REASON", help="Why (kept in the history)."
            ),
        ] = None,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
    ) -> None:
        """Mark VERSION rejected: never served (the production version cannot be rejected)."""
        registry = FileRegistry(data_dir(data) / "registry")
        change = reject(registry, model, version, reason)
        _announce(registry, change, kafka_opts)
        typer.echo(json.dumps({"model": model, "rejected": change.version}))
