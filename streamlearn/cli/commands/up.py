"""``streamlearn up``: run the whole loop locally with a live view."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from streamlearn.cli import options as o
from streamlearn.project import ProjectError
from streamlearn.stack.supervisor import Stack, StackConfig, run_stack


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _freshness_row(f: dict[str, Any]) -> str:
    if f["freshness_p50_s"] is None:
        return "–"
    means = " · ".join(
        f"{stage.split('_')[0]} {_fmt(v['mean'], 2)}"
        for stage, v in f["freshness_breakdown_s"].items()
    )
    return (
        f"{_fmt(f['freshness_p50_s'], 2)} s / {_fmt(f['freshness_p99_s'], 2)} s  (means: {means})"
    )


def _view(stack: Stack) -> Group:
    f = stack.figures()
    el = max(f["elapsed_s"], 1e-9)
    t = Table(title=f"streamlearn up — {f['elapsed_s']:.0f}s", show_header=False, expand=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row(
        "events produced / processed",
        f"{f['events_produced']} / {f['events_processed']}  ({f['events_processed'] / el:.0f}/s)",
    )
    t.add_row("predictions served", str(f["predictions_served"]))
    t.add_row(
        "predict p99 (client / server)",
        f"{_fmt(f['predict_p99_ms'], 1)} ms / {_fmt(f['serve_p99_ms'], 1)} ms",
    )
    t.add_row("freshness p50 / p99", _freshness_row(f))
    t.add_row("dead-lettered", str(f["dlq_events"]))
    models = Table(show_header=True, expand=False)
    for col in (
        "model",
        "version (published)",
        "examples emitted / trained",
        "live AUC / NE",
        "CTR model / random / oracle",
        "served",
    ):
        models.add_column(col, justify="left" if col == "model" else "right")
    for name, m in f["models"].items():
        models.add_row(
            name,
            f"{_fmt(m['model_version'])} ({m['versions']})",
            f"{m['examples_emitted']} / {m['examples_trained_live']}",
            f"{_fmt(m['progressive_auc'])} / {_fmt(m['progressive_ne'])}",
            f"{_fmt(m['ctr_model'], 4)} / {_fmt(m['ctr_random'], 4)} / {_fmt(m['ctr_oracle'], 4)}",
            str(m["predictions_served"]),
        )
    procs = Table(show_header=True, expand=False)
    for col in ("process", "state", "restarts"):
        procs.add_column(col)
    for name, c in stack.children.items():
        procs.add_row(name, "[green]up[/]" if c.alive else "[red]down[/]", str(c.restarts))
    return Group(t, models, procs, Text("\n".join(stack.events[-6:]), style="dim"))


def register(app: typer.Typer) -> None:
    """Add ``up``."""

    @app.command()
    @o.kafka_options()
    def up(
        kafka_opts: o.KafkaOptions,
        duration: Annotated[
            float | None,
            typer.Option(
                "--duration",
                envvar="STREAMLEARN_DURATION",
                help="Stop after this many seconds (default: until Ctrl-C).",
            ),
        ] = None,
        summary_json: Annotated[
            Path | None,
            typer.Option(
                "--summary-json",
                envvar="STREAMLEARN_SUMMARY_JSON",
                help="Write the run's figures here at the end.",
            ),
        ] = None,
        rate: Annotated[
            float,
            typer.Option(
                "--rate",
                envvar="STREAMLEARN_RATE",
                help="Simulator prediction requests per second.",
            ),
        ] = 150.0,
        seed: Annotated[int, typer.Option("--seed", envvar="STREAMLEARN_SEED")] = 7,
        snapshot_interval: Annotated[
            float,
            typer.Option(
                "--snapshot-interval",
                envvar="STREAMLEARN_SNAPSHOT_INTERVAL",
                help="Seconds between full model snapshots (with the learner state).",
            ),
        ] = 10.0,
        publish_interval: Annotated[
            float,
            typer.Option(
                "--publish-interval",
                envvar="STREAMLEARN_PUBLISH_INTERVAL",
                min=0.0,
                help="Seconds between serving-only model versions between snapshots "
                "(0: snapshots only).",
            ),
        ] = 1.0,
        label_window: Annotated[
            float,
            typer.Option(
                "--label-window",
                envvar="STREAMLEARN_LABEL_WINDOW",
                help="Label window of the joiner, seconds.",
            ),
        ] = 8.0,
        positives_at_once: Annotated[
            bool,
            typer.Option(
                "--positives-at-once/--positives-at-close",
                envvar="STREAMLEARN_POSITIVES_AT_ONCE",
                help="Joiner: emit positives as soon as their engagement is in (negatives "
                "wait for the label window), or every example when the window closes.",
            ),
        ] = True,
        runtime: Annotated[
            str,
            typer.Option("--runtime", envvar="STREAMLEARN_RUNTIME", help="microbatch or faust."),
        ] = "microbatch",
        serving_port: Annotated[
            int,
            typer.Option(
                "--serving-port",
                envvar="STREAMLEARN_SERVING_PORT",
                help="HTTP port of serving on 127.0.0.1 (0: a free one).",
            ),
        ] = 0,
        metrics_file: Annotated[
            Path | None,
            typer.Option(
                "--metrics-file",
                envvar="STREAMLEARN_METRICS_FILE",
                help="Write every process's metrics over the run here (OpenMetrics with "
                "timestamps and job/instance labels, rewritten every --metrics-interval): "
                "the dashboard's data without Grafana.",
            ),
        ] = None,
        metrics_interval: Annotated[
            float,
            typer.Option(
                "--metrics-interval",
                envvar="STREAMLEARN_METRICS_INTERVAL",
                min=0.5,
                help="Seconds between two rounds of the metrics file.",
            ),
        ] = 5.0,
        workers: Annotated[
            int,
            typer.Option(
                "--workers",
                envvar="STREAMLEARN_WORKERS",
                min=1,
                help="Feature processors and joiners to run, each group splitting the "
                "partitions (a dead one's move to the others).",
            ),
        ] = 1,
        serving_replicas: Annotated[
            int,
            typer.Option(
                "--serving-replicas",
                envvar="STREAMLEARN_SERVING_REPLICAS",
                min=1,
                help="Serving processes; the simulator spreads its requests over them.",
            ),
        ] = 1,
        trainer_ranks: Annotated[
            int,
            typer.Option(
                "--trainer-ranks",
                envvar="STREAMLEARN_TRAINER_RANKS",
                min=1,
                help="Processes training each model together (`train --ranks`; at most "
                "--partitions; the 'ranks' extra).",
            ),
        ] = 1,
        model: Annotated[
            list[str] | None,
            typer.Option(
                "--model",
                envvar="STREAMLEARN_UP_MODELS",
                help="A model to train and serve (repeatable; default: every model the project "
                "declares). The simulator asks only for the surfaces of these models.",
            ),
        ] = None,
        project_dir: o.ProjectDir = None,
        log: Annotated[
            Path | None,
            typer.Option(
                "--log",
                envvar="STREAMLEARN_UP_LOG",
                help="A historical log (CSV, Parquet or JSON lines, with a time column) "
                "published as the project's events instead of the simulator's (see "
                "`streamlearn produce --log`).",
            ),
        ] = None,
        speed: Annotated[
            float,
            typer.Option(
                "--speed",
                envvar="STREAMLEARN_UP_SPEED",
                min=0.0,
                help="Pace of --log: this many times real time by its time column "
                "(0: as fast as possible).",
            ),
        ] = 0.0,
        time_column: Annotated[
            str,
            typer.Option(
                "--time-column",
                envvar="STREAMLEARN_UP_TIME_COLUMN",
                help="The time column of --log (epoch seconds or ISO 8601).",
            ),
        ] = "ts",
        rollout_min_examples: o.RolloutMinExamples = o.DEFAULT_ROLLOUT.min_examples,
        rollout_watch_examples: o.RolloutWatchExamples = o.DEFAULT_ROLLOUT.watch_examples,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
    ) -> None:
        """Start the broker (unless one is given) and the whole loop, with a live view.

        The built-in example project is fed by the simulator; any project by a historical
        log (--log), or by your producers on its activity topic.
        """
        if trainer_ranks > kafka_opts.partitions:
            raise typer.BadParameter(
                f"expected at most --partitions ({kafka_opts.partitions}) ranks, got "
                f"{trainer_ranks}: a rank would have no partition to learn",
                param_hint="--trainer-ranks",
            )
        project = o.open_project(project_dir)
        declared = project.model_catalog.names
        unknown = [m for m in model or () if m not in declared]
        if unknown:
            raise typer.BadParameter(
                f"expected models among {list(declared)}, got {unknown}", param_hint="--model"
            )
        if log is not None and not log.is_file():
            raise ProjectError(f"--log {log}: no such file")
        cfg = StackConfig(
            data_dir=data,
            bootstrap_servers=kafka_opts.bootstrap_servers,
            topic_prefix=kafka_opts.topic_prefix,
            partitions=kafka_opts.partitions,
            kafka_options=kafka_opts.client_options,
            duration_s=duration,
            rate=rate,
            seed=seed,
            snapshot_interval_s=snapshot_interval,
            publish_interval_s=publish_interval,
            label_window_s=label_window,
            positives_at_once=positives_at_once,
            serving_port=serving_port,
            runtime=runtime,
            metrics_file=metrics_file,
            metrics_interval_s=metrics_interval,
            workers=workers,
            serving_replicas=serving_replicas,
            trainer_ranks=trainer_ranks,
            rollout_min_examples=rollout_min_examples,
            rollout_watch_examples=rollout_watch_examples,
            models=tuple(model or declared),
            project_dir=project_dir,
            log=log,
            log_speed=speed,
            log_time_column=time_column,
        )
        stopping = {"flag": False}

        def _stop(_s: int, _f: object) -> None:
            stopping["flag"] = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _stop)
        console = Console(stderr=True)
        if console.is_terminal:
            # Log lines go above the live view instead of tearing through it.
            root = logging.getLogger()
            root.handlers = [RichHandler(console=console, show_path=False)]
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            last = [0.0]

            def render(stack: Stack) -> None:
                if console.is_terminal:
                    live.update(_view(stack))
                elif stack.figures()["elapsed_s"] - last[0] >= 10:
                    last[0] = stack.figures()["elapsed_s"]
                    console.print(json.dumps(stack.figures()))

            summary = run_stack(cfg, render, lambda: stopping["flag"])
        console.print_json(json.dumps(summary))
        if summary_json:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(summary, indent=2))
