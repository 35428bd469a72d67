"""Promotion and rollback of model versions, with a promotion history.

Stages live in the registry (``FileRegistry.set_stage``; serving serves the production
version). The registry keeps only the current stage of each version, so rollback needs
a history: every promote and rollback appends one line to
``<registry>/<model>/promotions.jsonl``. The production history is a stack — promote
pushes, rollback pops the current version and re-promotes the one below it. Without a
history (stages set by other tools) rollback falls back to the newest archived version
older than the current production one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import RegistryError
from models.registry import FileRegistry, ModelVersion
from offline.errors import PromotionError
from streams.config import KafkaConfig
from streams.contracts import ModelUpdate, encode
from streams.kafka import flush, make_producer, produce
from streams.topics import Topics, ensure_topics

HISTORY_FILE = "promotions.jsonl"


@dataclass(frozen=True)
class StageChange:
    """A promotion or rollback that happened."""

    model: str
    version: int
    previous: int | None
    action: str


def _history_path(registry: FileRegistry, model: str) -> Path:
    return registry.root / model / HISTORY_FILE


def history(registry: FileRegistry, model: str) -> list[dict[str, Any]]:
    """Every promote/rollback of ``model``, oldest first."""
    path = _history_path(registry, model)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stack(events: list[dict[str, Any]]) -> list[int]:
    stack: list[int] = []
    for e in events:
        if e["action"] == "promote":
            stack.append(int(e["version"]))
        elif e["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _current(registry: FileRegistry, model: str) -> int | None:
    prod = [mv.version for mv in registry.versions(model) if mv.stage == "production"]
    return max(prod) if prod else None


def _record(registry: FileRegistry, change: StageChange) -> None:
    line = {
        "action": change.action,
        "version": change.version,
        "previous": change.previous,
        "at": time.time(),
    }
    with open(_history_path(registry, change.model), "a") as fh:
        fh.write(json.dumps(line) + "\n")


def promote(registry: FileRegistry, model: str, version: int) -> StageChange:
    """Make ``version`` the production version (the previous one is archived)."""
    try:
        registry.get(model, version)
        previous = _current(registry, model)
        registry.set_stage(model, version, "production")
    except RegistryError as exc:
        raise PromotionError(str(exc)) from exc
    change = StageChange(model, version, previous, "promote")
    _record(registry, change)
    return change


def rollback(registry: FileRegistry, model: str) -> StageChange:
    """Re-promote the production version that preceded the current one."""
    current = _current(registry, model)
    if current is None:
        raise PromotionError(f"model {model!r} has no production version to roll back from")
    stack = _stack(history(registry, model))
    while stack and stack[-1] == current:
        stack.pop()
    existing = {mv.version: mv for mv in registry.versions(model)}
    target = next((v for v in reversed(stack) if v in existing and v != current), None)
    if target is None:
        older = [v for v, mv in existing.items() if mv.stage == "archived" and v < current]
        target = max(older) if older else None
    if target is None:
        raise PromotionError(
            f"model {model!r}: expected an earlier production version to roll back to from "
            f"version {current}, found none"
        )
    registry.set_stage(model, target, "production")
    change = StageChange(model, target, current, "rollback")
    _record(registry, change)
    return change


def describe(registry: FileRegistry, model: str) -> list[dict[str, Any]]:
    """One row per version: version, stage, created_at, key metrics, serving flag."""
    serving = registry.serving_version(model)
    return [_row(mv, serving) for mv in registry.versions(model)]


def _row(mv: ModelVersion, serving: ModelVersion | None) -> dict[str, Any]:
    metrics = mv.metadata.get("metrics") or {}
    keys = ("accuracy", "auc", "logloss", "ne")
    return {
        "version": mv.version,
        "stage": mv.stage,
        "serving": serving is not None and serving.version == mv.version,
        "kind": mv.metadata.get("kind"),
        "learner": mv.metadata.get("learner"),
        "created_at": mv.metadata.get("created_at"),
        **{k: metrics[k] for k in keys if isinstance(metrics.get(k), int | float)},
    }


def announce(config: KafkaConfig, registry: FileRegistry, change: StageChange) -> None:
    """Publish a ``ModelUpdate(kind="stage")`` for ``change`` on the model-updates topic.

    Serving also polls the registry's stages, so this only makes the switch faster.
    """
    topic = Topics(config.topic_prefix).model_updates
    ensure_topics(config, [topic], partitions=1)
    metrics = registry.get(change.model, change.version).metadata.get("metrics") or {}
    update = ModelUpdate(
        change.model,
        change.version,
        time.time(),
        kind="stage",
        metrics={**metrics, "stage": "production", "previous": change.previous},
    )
    producer = make_producer(config)
    produce(producer, topic, encode(update), change.model)
    flush(producer, 10.0)
