"""The built-in ``vision`` flow: train a small CNN, export ONNX, publish.

One step, ``train``, declared with ``gpus="auto"``: on a Ray cluster with a GPU it runs
as a task holding one (Ray sets ``CUDA_VISIBLE_DEVICES``; ``device=auto`` then trains on
it), elsewhere on a CPU. Params (``--param name=value``): ``dataset`` (``digits``) or
``data`` (an image folder), ``model``, ``epochs``, ``batch_size``, ``lr``, ``size``,
``holdout``, ``seed``, ``device`` — as ``streamlearn offline vision``. Checkpoints live
in the step's cache directory, so a failed run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamlearn.models.extras import require
from streamlearn.models.registry import FileRegistry
from streamlearn.offline.flow.context import StepContext
from streamlearn.offline.flow.graph import Flow


def _metrics(outputs: Mapping[str, Any]) -> dict[str, Any]:
    out = outputs.get("train") or {}
    return {k: out.get(k) for k in ("accuracy", "train_seconds", "version", "device")}


vision = Flow(
    "vision",
    params={
        "model": "vision",
        "dataset": "digits",
        "data": None,
        "epochs": 10,
        "batch_size": 32,
        "lr": 6e-3,
        "size": None,
        "holdout": 0.2,
        "seed": 0,
        "device": "auto",
    },
    description="Train a small CNN on an image folder or the bundled digits (on a GPU "
    "where the cluster has one), export ONNX with a parity check, publish it.",
    metrics=_metrics,
    headline=("accuracy", "train_seconds"),
)


@vision.step(cpus=1, gpus="auto")
def train(
    ctx: StepContext,
    model: str,
    dataset: str | None,
    data: str | None,
    epochs: int,
    batch_size: int,
    lr: float,
    size: int | None,
    holdout: float,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """Train (or resume), evaluate on the holdout, export with a parity check, publish."""
    # torch takes seconds to import: only this step pays for it
    require("vision", "the vision training step")
    from streamlearn.offline.vision import VisionConfig, train_vision

    config = VisionConfig(
        data=Path(data) if data else None,
        dataset=None if data else dataset,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
        device=device,
    )
    registry = ctx.resources.get("registry")
    result = train_vision(
        config,
        ctx.out / "checkpoints",
        registry if isinstance(registry, FileRegistry) else None,
        model,
    )
    return result.summary()
