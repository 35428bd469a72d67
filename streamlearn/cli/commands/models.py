"""``streamlearn models defs|list|promote|rollback|reject``: the declared models, registry
stages (announced to serving)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.cli.ui import console
from streamlearn.models.registry import FileRegistry
from streamlearn.models.stages import StageChange, describe, promote, reject, rollback
from streamlearn.offline.promotion import announce

Model = Annotated[str, typer.Argument(help="Model name.")]


def register(app: typer.Typer) -> None:
    """Add the ``models`` group."""
    group = typer.Typer(help="Model versions and their stages.", no_args_is_help=True)
    app.add_typer(group, name="models")
    group.command("defs")(defs_cmd)
    group.command("list")(list_cmd)
    group.command("promote")(promote_cmd)
    group.command("rollback")(rollback_cmd)
    group.command("reject")(reject_cmd)


def _change_stage(
    kafka: o.KafkaOptions, data: o.DataDir, change: Callable[[FileRegistry], StageChange]
) -> StageChange:
    """Apply ``change`` to the registry, then announce it on ``model-updates`` (a hint:
    serving also polls the registry, so a failed announcement is only a warning)."""
    registry = o.open_registry(data)
    done = change(registry)
    if not kafka.given:
        console.print("no broker configured: serving picks the change up from the registry")
        return done
    try:
        announce(kafka.config(), registry, done)
    except Exception as exc:  # the stage is already changed; the announcement is a hint
        console.print(f"[yellow]warning:[/yellow] stage changed, announcement failed: {exc}")
    return done


def defs_cmd(project_dir: o.ProjectDir = None) -> None:
    """The project's models (name, head, feature spec, learner, params, surfaces), one
    JSON object per line."""
    for definition in o.open_project(project_dir).model_catalog:
        typer.echo(json.dumps(definition.info()))


def list_cmd(
    model: Annotated[
        str | None, typer.Argument(help="Model name; all models when omitted.")
    ] = None,
    data: o.DataDir = o.DEFAULT_DATA_DIR,
) -> None:
    """Versions with stage, serving flag and key metrics (one JSON object per line)."""
    registry = o.open_registry(data)
    for name in [model] if model else registry.models():
        for row in describe(registry, name):
            typer.echo(json.dumps({"model": name, **row}))


@o.kafka_options(partitions=False)
def promote_cmd(
    kafka_opts: o.KafkaOptions,
    model: Model,
    version: Annotated[int, typer.Argument(help="Version to make production.")],
    data: o.DataDir = o.DEFAULT_DATA_DIR,
) -> None:
    """Mark VERSION production (the previous production version is archived)."""
    done = _change_stage(kafka_opts, data, lambda r: promote(r, model, version))
    typer.echo(json.dumps({"model": model, "production": done.version, "previous": done.previous}))


@o.kafka_options(partitions=False)
def rollback_cmd(
    kafka_opts: o.KafkaOptions, model: Model, data: o.DataDir = o.DEFAULT_DATA_DIR
) -> None:
    """Re-promote the production version that preceded the current one."""
    done = _change_stage(kafka_opts, data, lambda r: rollback(r, model))
    typer.echo(json.dumps({"model": model, "production": done.version, "previous": done.previous}))


@o.kafka_options(partitions=False)
def reject_cmd(
    kafka_opts: o.KafkaOptions,
    model: Model,
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
    done = _change_stage(kafka_opts, data, lambda r: reject(r, model, version, reason))
    typer.echo(json.dumps({"model": model, "rejected": done.version}))
