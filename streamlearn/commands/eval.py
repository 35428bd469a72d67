"""``streamlearn eval``: prequential evaluation of a learner on a CSV, JSONL or Parquet file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.errors import ModelError
from models.zoo import available
from offline.errors import OfflineError
from offline.prequential import EvalConfig, evaluate

console = Console(stderr=True)


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--param must look like key=value, got {pair!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _line(report: dict[str, Any]) -> str:
    keys = ("auc", "logloss", "ne", "calibration", "window_auc", "window_logloss")
    body = "  ".join(f"{k}={_fmt(report.get(k))}" for k in keys)
    return f"{report['count']:>10,d} ex  {body}  {report['examples_per_s']:,.0f} ex/s"


def register(app: typer.Typer) -> None:
    """Add ``eval``."""

    @app.command("eval")
    def eval_cmd(
        data: Annotated[
            Path,
            typer.Option("--data", envvar="STREAMLEARN_DATA", help="CSV, JSONL or Parquet file."),
        ],
        label: Annotated[
            str,
            typer.Option("--label", envvar="STREAMLEARN_LABEL", help="0/1 label column."),
        ],
        time_column: Annotated[
            str | None,
            typer.Option(
                "--time-column", envvar="STREAMLEARN_TIME_COLUMN", help="Order rows by it."
            ),
        ] = None,
        features: Annotated[
            str | None,
            typer.Option(
                "--features",
                envvar="STREAMLEARN_FEATURES",
                help="Comma-separated feature columns (default: all but label and time).",
            ),
        ] = None,
        model: Annotated[
            str,
            typer.Option(
                "--model", envvar="STREAMLEARN_MODEL", help=f"Learner: {', '.join(available())}."
            ),
        ] = "ftrl",
        param: Annotated[
            list[str] | None,
            typer.Option(
                "--param",
                envvar="STREAMLEARN_PARAM",
                help="Learner hyper-parameter key=value (repeatable), e.g. alpha=0.1.",
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", envvar="STREAMLEARN_SEED")] = 0,
        batch_size: Annotated[
            int,
            typer.Option("--batch-size", envvar="STREAMLEARN_BATCH_SIZE", min=1),
        ] = 1000,
        hash_bits: Annotated[
            int,
            typer.Option("--hash-bits", envvar="STREAMLEARN_HASH_BITS", min=1, max=30),
        ] = 20,
        summary_json: Annotated[
            Path | None,
            typer.Option(
                "--summary-json", envvar="STREAMLEARN_SUMMARY_JSON", help="Write the summary here."
            ),
        ] = None,
        quiet: Annotated[
            bool, typer.Option("--quiet", envvar="STREAMLEARN_QUIET", help="No progress bar.")
        ] = False,
    ) -> None:
        """Predict-then-learn over a file; print AUC, log loss, NE, calibration, throughput."""
        chosen = tuple(f.strip() for f in features.split(",") if f.strip()) if features else None
        config = EvalConfig(
            data=data,
            label=label,
            time_column=time_column,
            features=chosen,
            model=model,
            params=parse_params(param),
            seed=seed,
            batch_size=batch_size,
            hash_bits=hash_bits,
        )
        with Progress(
            TextColumn("eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as bar:
            task = bar.add_task("eval", total=None)

            def progress(done: int, total: int, report: dict[str, Any]) -> None:
                bar.update(task, completed=done, total=total)
                bar.console.print(_line(report))

            try:
                summary = evaluate(config, progress)
            except (ModelError, OfflineError) as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
        console.print("[bold]summary[/bold] " + _line({**summary, "count": summary["examples"]}))
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
