"""``streamlearn eval``: prequential evaluation of a learner on a file or a topic range.

``--data`` reads a CSV, JSONL or Parquet file; ``--topic`` (with ``--from``/``--to``)
replays the range with :func:`streamlearn.offline.replay.replay` into a temporary dataset first.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from streamlearn.cli import options as o
from streamlearn.cli.ui import console, progress_bar, replay_progress
from streamlearn.models.errors import MissingExtra
from streamlearn.models.zoo import available, require_learner
from streamlearn.offline.dataset import DATA_FILE
from streamlearn.offline.errors import RangeError
from streamlearn.offline.prequential import (
    AUTO,
    COMPARED_LEARNERS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_HASH_BITS,
    EvalConfig,
    compare_learners,
    progressive_validation,
)
from streamlearn.offline.ranges import EARLIEST, LATEST, parse_bounds
from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.streams.errors import CatalogError
from streamlearn.streams.kafka.config import KafkaConfig


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _line(report: dict[str, Any]) -> str:
    keys = ("auc", "logloss", "ne", "calibration", "window_auc", "window_logloss")
    body = "  ".join(f"{k}={_fmt(report.get(k))}" for k in keys)
    return f"{report['count']:>10,d} ex  {body}  {report['examples_per_s']:,.0f} ex/s"


def _table(summary: dict[str, Any]) -> Table:
    """One row per learner: AUC, log loss against the constant predictor's, throughput."""
    table = Table(
        title=f"{summary['examples']:,} examples, positive rate "
        f"{_fmt(summary['positive_rate'])}, constant predictor log loss "
        f"{_fmt(summary['constant_logloss'])}"
    )
    for col in ("learner", "AUC", "log loss", "NE", "calibration", "examples/s"):
        table.add_column(col, justify="left" if col == "learner" else "right")
    for name, s in summary["learners"].items():
        mark = " (best)" if name == summary["best"] else ""
        table.add_row(
            name + mark,
            _fmt(s["auc"]),
            _fmt(s["logloss"]),
            _fmt(s["ne"]),
            _fmt(s["calibration"]),
            f"{s['examples_per_s']:,.0f}" if s["examples_per_s"] else "—",
        )
    return table


def _decisions(summary: dict[str, Any]) -> str:
    notes = []
    if summary.get("positive_label") is not None:
        notes.append(f"label {summary['label']!r}: {summary['positive_label']!r} is 1")
    if summary.get("dropped_id_columns"):
        notes.append(f"id columns left out: {summary['dropped_id_columns']}")
    if summary.get("block_column"):
        notes.append(
            f"rows come in blocks of {summary['block_column']!r}: {summary['block_features']} "
            "numbers also enter as z-scores within the block so far (--block-column none: off)"
        )
    return "; ".join(notes)


def compare_with_progress(config: EvalConfig, quiet: bool) -> dict[str, Any]:
    """:func:`compare_learners` with a progress bar per learner."""
    with progress_bar(not quiet) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(model: str, done: int, total: int, report: dict[str, Any]) -> None:
            if model not in tasks:
                tasks[model] = bar.add_task(f"eval {model}", total=total, note="")
            bar.update(tasks[model], completed=done, total=total)

        return compare_learners(config, _installed(COMPARED_LEARNERS), progress)


def _installed(learners: tuple[str, ...]) -> list[str]:
    """The learners whose extras are installed; a note on stderr for each left out."""
    out = []
    for name in learners:
        try:
            require_learner(name)
        except MissingExtra as exc:
            console.print(f"note: not compared: {exc}", markup=False, soft_wrap=True)
            continue
        out.append(name)
    return out


def eval_with_progress(config: EvalConfig, quiet: bool) -> dict[str, Any]:
    """:func:`progressive_validation` with a progress bar and a metrics line per report."""
    with progress_bar(not quiet) as bar:
        task = bar.add_task("eval", total=None, note="")

        def progress(done: int, total: int, report: dict[str, Any]) -> None:
            bar.update(task, completed=done, total=total)
            bar.console.print(_line(report))

        return progressive_validation(config, progress)


def run_eval(config: EvalConfig, quiet: bool, single: bool) -> dict[str, Any]:
    """One learner (``single``) or the comparison of all."""
    return eval_with_progress(config, quiet) if single else compare_with_progress(config, quiet)


def eval_range(
    kafka: KafkaConfig, spec: ReplaySpec, config: EvalConfig, quiet: bool, single: bool = True
) -> dict[str, Any]:
    """Replay ``spec`` into a temporary dataset (progress shown), then evaluate it."""
    with tempfile.TemporaryDirectory(prefix="streamlearn-eval-") as tmp:
        out = Path(tmp) / "replay"
        with progress_bar(not quiet) as bar:
            manifest = replay(kafka, spec, out, progress=replay_progress(bar, "replay "))
        if not manifest["records"]:
            raise RangeError(
                f"expected records to evaluate in topics {list(spec.topics)} from {spec.start} "
                f"to {spec.end}, got none ({manifest['rejected']} rejected)"
            )
        summary = run_eval(replace(config, data=out / DATA_FILE), quiet, single)
    keep = ("topics", "format", "records", "rejected", "checksum", "partitions")
    return {**summary, "data": None, "replay": {k: manifest[k] for k in keep}}


def register(app: typer.Typer) -> None:
    """Add ``eval``."""

    @app.command("eval")
    @o.kafka_options()
    def eval_cmd(
        kafka_opts: o.KafkaOptions,
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                envvar="STREAMLEARN_DATA",
                help="CSV, JSONL or Parquet file (or use --topic).",
            ),
        ] = None,
        topic: Annotated[
            list[str] | None,
            typer.Option(
                "--topic",
                "-t",
                envvar="STREAMLEARN_EVAL_TOPICS",
                help="Topic to replay and evaluate (repeatable; full name, prefix included), "
                "e.g. streamlearn.training-examples.MODEL. Instead of --data.",
            ),
        ] = None,
        from_: Annotated[
            list[str] | None,
            typer.Option(
                "--from",
                envvar="STREAMLEARN_EVAL_FROM",
                help="With --topic: start (inclusive), as in `streamlearn replay`: earliest, "
                "OFFSET, ISO time, @EPOCH_S; prefix PARTITION: for one partition (repeatable).",
            ),
        ] = None,
        to: Annotated[
            list[str] | None,
            typer.Option(
                "--to",
                envvar="STREAMLEARN_EVAL_TO",
                help="With --topic: end (exclusive), as in `streamlearn replay`: latest, "
                "OFFSET, ISO time, @EPOCH_S; prefix PARTITION: for one partition (repeatable).",
            ),
        ] = None,
        label: Annotated[
            str | None,
            typer.Option(
                "--label",
                envvar="STREAMLEARN_LABEL",
                help="Label column (default: label): 0/1, boolean, -1/1, or two text values "
                "(yes/no, true/false… by meaning, else the rarer one is 1).",
            ),
        ] = None,
        positive: Annotated[
            str | None,
            typer.Option(
                "--positive",
                envvar="STREAMLEARN_POSITIVE",
                help="The label value that is 1 (overrides the automatic mapping).",
            ),
        ] = None,
        drop: Annotated[
            str | None,
            typer.Option(
                "--drop",
                envvar="STREAMLEARN_DROP",
                help="Comma-separated columns to leave out of the features (e.g. a leak).",
            ),
        ] = None,
        block_column: Annotated[
            str,
            typer.Option(
                "--block-column",
                envvar="STREAMLEARN_BLOCK_COLUMN",
                help="Column whose rows come in blocks (a session, a query): each number "
                "also enters as its z-score within the block so far. auto: found in the "
                "data (a plain table without --features); none: off.",
            ),
        ] = AUTO,
        time_column: Annotated[
            str | None,
            typer.Option(
                "--time-column",
                envvar="STREAMLEARN_TIME_COLUMN",
                help="Order rows by it (default for training examples: ts).",
            ),
        ] = None,
        features: Annotated[
            str | None,
            typer.Option(
                "--features",
                envvar="STREAMLEARN_FEATURES",
                help="Comma-separated feature columns (default: all but label and time; for "
                "training examples, the keys of their features).",
            ),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                envvar="STREAMLEARN_MODEL",
                help=f"Learner: {', '.join(available())} (default: compare "
                f"{', '.join(COMPARED_LEARNERS)} and mark the best).",
            ),
        ] = None,
        param: o.Params = None,
        definition: Annotated[
            str | None,
            typer.Option(
                "--definition",
                envvar="STREAMLEARN_DEFINITION",
                help="Evaluate a model the project declares as the online trainer builds "
                "it: its feature spec, head, learner and params (--model/--param override "
                "the learner).",
            ),
        ] = None,
        project_dir: o.ProjectDir = None,
        seed: o.Seed = 0,
        batch_size: o.BatchSize = DEFAULT_BATCH_SIZE,
        hash_bits: o.HashBits = DEFAULT_HASH_BITS,
        summary_json: o.SummaryJson = None,
        quiet: o.Quiet = False,
    ) -> None:
        """Predict-then-learn over a file or a topic range; print AUC, log loss, NE, calibration,
        throughput."""
        if (data is None) == (not topic):
            raise typer.BadParameter("expected exactly one of --data FILE or --topic TOPIC")
        if data is not None and (from_ or to):
            raise typer.BadParameter("--from/--to apply to --topic, not --data")
        chosen = tuple(f.strip() for f in features.split(",") if f.strip()) if features else None
        dropped = tuple(f.strip() for f in drop.split(",") if f.strip()) if drop else ()
        try:
            mdef = (
                None
                if definition is None
                else o.open_project(project_dir).model_catalog.get(definition)
            )
        except CatalogError as exc:
            raise typer.BadParameter(str(exc), param_hint="--definition") from None
        single = model is not None or mdef is not None
        if param and not single:
            raise typer.BadParameter(
                "--param sets one learner's hyper-parameters: pass --model with it "
                "(without --model, eval compares every learner at its defaults)"
            )
        config = EvalConfig(
            data=data or Path(DATA_FILE),
            label=label,
            time_column=time_column,
            features=chosen,
            positive=positive,
            drop=dropped,
            block_column=block_column,
            model=model or (mdef.learner if mdef else COMPARED_LEARNERS[0]),
            params=o.parse_params(param),
            definition=mdef,
            seed=seed,
            batch_size=batch_size,
            hash_bits=hash_bits,
        )
        if topic:
            kafka = kafka_opts.config()
            spec = ReplaySpec(
                tuple(topic),
                start=parse_bounds(from_ or [], EARLIEST),
                end=parse_bounds(to or [], LATEST),
            )
            summary = eval_range(kafka, spec, config, quiet, single)
        else:
            summary = run_eval(config, quiet, single)
        if _decisions(summary):
            console.print(_decisions(summary))
        if single:
            console.print(
                "[bold]summary[/bold] " + _line({**summary, "count": summary["examples"]})
            )
        else:
            Console().print(_table(summary))
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
