"""``streamlearn offline train|vision``: batch (re)training that publishes to the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamlearn.cli import options as o
from streamlearn.cli.settings import data_dir
from streamlearn.cli.ui import fail, progress_bar
from streamlearn.models.extras import require
from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry
from streamlearn.models.zoo import DEFAULT_LEARNER
from streamlearn.offline.train import TrainConfig, train

if TYPE_CHECKING:
    from streamlearn.offline.vision import VisionProgress

Epochs = Annotated[
    int, typer.Option("--epochs", envvar="STREAMLEARN_EPOCHS", min=1, help="Passes over the data.")
]
Holdout = Annotated[
    float,
    typer.Option(
        "--holdout",
        envvar="STREAMLEARN_HOLDOUT",
        min=0.0,
        max=0.95,
        help="Fraction held out for evaluation (train: the most recent rows).",
    ),
]
NoPublish = Annotated[
    bool,
    typer.Option(
        "--no-publish",
        envvar="STREAMLEARN_NO_PUBLISH",
        help="Train and evaluate only; do not write to the registry.",
    ),
]


def _read_spec(path: Path | None) -> FeatureSpec | None:
    """The ``--spec`` file's FeatureSpec (a usage error when it cannot be read)."""
    if path is None:
        return None
    try:
        return FeatureSpec.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the feature spec {path}: {exc}") from None


def _registry(data: Path, no_publish: bool) -> FileRegistry | None:
    return None if no_publish else o.open_registry(data)


def _write_summary(path: Path | None, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=1, sort_keys=True, default=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    typer.echo(text)


def register(app: typer.Typer) -> None:
    """Add the ``offline`` group."""
    group = typer.Typer(help="Batch (re)training and the vision path.", no_args_is_help=True)
    app.add_typer(group, name="offline")
    group.command("train")(train_cmd)
    group.command("vision")(vision_cmd)


def train_cmd(
    dataset: Annotated[Path, typer.Argument(help="Replayed dataset dir or Parquet file.")],
    model: o.Model = None,
    project_dir: o.ProjectDir = None,
    learner: o.Learner = None,
    param: o.Params = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            envvar="STREAMLEARN_FEATURE_SPEC",
            help="FeatureSpec JSON; default: the project's model's, else inferred from the "
            "training rows.",
        ),
    ] = None,
    infer_spec: Annotated[
        bool,
        typer.Option(
            "--infer-spec",
            envvar="STREAMLEARN_INFER_SPEC",
            help="Infer the feature spec from the rows even for a declared model.",
        ),
    ] = False,
    hash_bits: o.HashBits = 20,
    label: Annotated[
        str, typer.Option("--label", envvar="STREAMLEARN_LABEL", help="Label column (0/1).")
    ] = "label",
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            envvar="STREAMLEARN_TIME_COLUMN",
            help="Ordering column; default ts, else timestamp, else file order.",
        ),
    ] = None,
    epochs: Epochs = 1,
    batch_size: o.BatchSize = 256,
    shuffle: Annotated[
        bool,
        typer.Option(
            "--shuffle",
            envvar="STREAMLEARN_SHUFFLE",
            help="Shuffle each epoch with the seed (default: time order).",
        ),
    ] = False,
    holdout: Holdout = 0.2,
    seed: o.Seed = 0,
    data: o.DataDir = o.DEFAULT_DATA_DIR,
    no_publish: NoPublish = False,
    summary_json: o.SummaryJson = None,
    quiet: o.Quiet = False,
) -> None:
    """Train an online learner on a replayed dataset and publish it with lineage."""
    project = o.open_project(project_dir)
    if model is not None and model not in project.model_catalog:
        definition = None  # a model the project does not declare: spec from the rows
    else:
        definition = o.model_definition(project, model)
        model = definition.name
    cfg = TrainConfig(
        infer_spec=infer_spec,
        definition=definition,
        learner=learner or (definition.learner if definition else DEFAULT_LEARNER),
        params=o.parse_params(param),
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        holdout=holdout,
        shuffle=shuffle,
        label=label,
        time_column=time_column,
        spec=_read_spec(spec),
        hash_bits=hash_bits,
    )
    with progress_bar(not quiet) as bar:
        task = bar.add_task(f"train {model}", total=None, note="")
        result = train(
            dataset,
            cfg,
            _registry(data, no_publish),
            model,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    _write_summary(
        summary_json,
        {
            "model": model,
            "version": result.version.version if result.version else None,
            "metrics": result.metrics,
            "train_seconds": round(result.seconds, 3),
            "lineage": result.lineage,
        },
    )


def vision_cmd(
    data_path: Annotated[
        Path | None,
        typer.Option(
            "--data",
            envvar="STREAMLEARN_VISION_DATA",
            help="Image folder: one subfolder per class, PNG/JPEG, any size.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            envvar="STREAMLEARN_VISION_DATASET",
            help="A bundled dataset instead of --data: digits.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option("--model", envvar="STREAMLEARN_MODEL", help="Registry name of the model."),
    ] = "vision",
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            envvar="STREAMLEARN_VISION_SIZE",
            help="Square input size, a multiple of 4 (default 16 digits, 32 folders).",
        ),
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option(
            "--channels",
            envvar="STREAMLEARN_VISION_CHANNELS",
            help="1 or 3 (default: 1 if every image is grayscale).",
        ),
    ] = None,
    epochs: Epochs = 10,
    batch_size: o.BatchSize = 32,
    lr: Annotated[
        float, typer.Option("--lr", envvar="STREAMLEARN_LR", help="Adam learning rate.")
    ] = 6e-3,
    holdout: Holdout = 0.2,
    seed: o.Seed = 0,
    device: Annotated[
        str, typer.Option("--device", envvar="STREAMLEARN_DEVICE", help="auto | cpu | cuda.")
    ] = "auto",
    data: o.DataDir = o.DEFAULT_DATA_DIR,
    no_publish: NoPublish = False,
    summary_json: o.SummaryJson = None,
    quiet: o.Quiet = False,
) -> None:
    """Train a small CNN, check its ONNX export, publish it (resumes from checkpoints)."""
    # torch takes seconds to import: only this command pays for it
    require("vision", "streamlearn offline vision")
    from streamlearn.offline.vision import VisionConfig, train_vision

    cfg = VisionConfig(
        data=data_path,
        dataset=dataset,
        size=size,
        channels=channels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
        device=device,
    )
    checkpoints = data_dir(data) / "checkpoints" / "vision" / model
    with progress_bar(not quiet) as bar:
        task = bar.add_task(f"vision {model}", total=None, note="")

        def on_progress(p: VisionProgress) -> None:
            bar.update(
                task,
                completed=(p.epoch - 1) * p.batches + p.batch,
                total=p.epochs * p.batches,
                note=f"epoch {p.epoch} loss {p.loss:.3f}",
            )

        result = train_vision(cfg, checkpoints, _registry(data, no_publish), model, on_progress)
    _write_summary(summary_json, result.summary())
