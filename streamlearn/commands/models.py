"""``streamlearn models defs|list|promote|rollback|reject``: the declared models, registry
stages (announced to serving)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from models.errors import ModelError
from models.registry import FileRegistry
from models.stages import StageChange, describe, promote, reject, rollback
from offline.promotion import announce
from streamlearn import options as o
from streamlearn.commands.replay import console, fail
from streamlearn.settings import data_dir, kafka_config
from streams.model_catalog import MODELS


def _announce(
    registry: FileRegistry,
    change: StageChange,
    bootstrap: str | None,
    prefix: str,
    opts: list[str] | None,
) -> None:
    if not bootstrap:
        console.print("no broker configured: serving picks the change up from the registry")
        return
    try:
        announce(kafka_config(bootstrap, prefix, 1, opts), registry, change)
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
        try:
            for name in [model] if model else registry.models():
                for row in describe(registry, name):
                    typer.echo(json.dumps({"model": name, **row}))
        except ModelError as exc:
            raise fail(exc) from None

    @group.command("promote")
    def promote_cmd(
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version to make production.")],
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        bootstrap_servers: o.BootstrapServers = None,
        topic_prefix: o.TopicPrefix = o.DEFAULT_PREFIX,
        kafka_option: o.KafkaOptions = None,
    ) -> None:
        """Mark VERSION production (the previous production version is archived)."""
        registry = FileRegistry(data_dir(data) / "registry")
        try:
            change = promote(registry, model, version)
        except ModelError as exc:
            raise fail(exc) from None
        _announce(registry, change, bootstrap_servers, topic_prefix, kafka_option)
        typer.echo(
            json.dumps({"model": model, "production": change.version, "previous": change.previous})
        )

    @group.command("rollback")
    def rollback_cmd(
        model: Annotated[str, typer.Argument(help="Model name.")],
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        bootstrap_servers: o.BootstrapServers = None,
        topic_prefix: o.TopicPrefix = o.DEFAULT_PREFIX,
        kafka_option: o.KafkaOptions = None,
    ) -> None:
        """Re-promote the production version that preceded the current one."""
        registry = FileRegistry(data_dir(data) / "registry")
        try:
            change = rollback(registry, model)
        except ModelError as exc:
            raise fail(exc) from None
        _announce(registry, change, bootstrap_servers, topic_prefix, kafka_option)
        typer.echo(
            json.dumps({"model": model, "production": change.version, "previous": change.previous})
        )

    @group.command("reject")
    def reject_cmd(
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version never to serve.")],
        reason: Annotated[
            str | None,
            typer.Option(
                "--reason", envvar="STREAMLEARN_REJECT_REASON", help="Why (kept in the history)."
            ),
        ] = None,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        bootstrap_servers: o.BootstrapServers = None,
        topic_prefix: o.TopicPrefix = o.DEFAULT_PREFIX,
        kafka_option: o.KafkaOptions = None,
    ) -> None:
        """Mark VERSION rejected: never served (the production version cannot be rejected)."""
        registry = FileRegistry(data_dir(data) / "registry")
        try:
            change = reject(registry, model, version, reason)
        except ModelError as exc:
            raise fail(exc) from None
        _announce(registry, change, bootstrap_servers, topic_prefix, kafka_option)
        typer.echo(json.dumps({"model": model, "rejected": change.version}))
