"""Promotion, rollback and rejection of model versions, with a stage history.

Stages live in the registry (:meth:`FileRegistry.set_stage`; serving serves the production
version, see :meth:`FileRegistry.serving_version`). The registry keeps only the current
stage of each version, so rollback needs a history: every promote, rollback and reject
appends one line to ``<registry>/<model>/promotions.jsonl`` (with a ``reason`` and the
``figures`` it rests on when the rollout decided it, ``by: "rollout"``). The production
history is a stack — promote pushes, rollback pops the current version and re-promotes
the one below it (skipping versions rejected since). A production version the online
trainer published (its lineage is production: it marks each version it publishes) rolls
back to the version it continued from (``parent_version``). Without either (stages set
by other tools) rollback falls back to the newest archived version older than the
current production one.

The CLI (``streamlearn models promote|rollback|reject``) and serving's admin endpoints
call these same functions; announcing a change on Kafka is the caller's business.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlearn.models.errors import RegistryError, StageError
from streamlearn.models.registry import FileRegistry, ModelVersion, Stage
from streamlearn.models.snapshot import Snapshot

HISTORY_FILE = "promotions.jsonl"
#: ``origin`` of versions trained offline (the online trainer's are ``online``).
OFFLINE = "offline"


def publish_candidate(
    registry: FileRegistry, model: str, snapshot: Snapshot, extra: dict[str, Any]
) -> ModelVersion:
    """Publish an offline-trained version as a ``candidate`` with ``origin`` ``offline``.

    The online trainer resumes only from versions it published itself, so an offline
    version never becomes its resume point (it carries no offsets of the stream); it
    serves once promoted (or while it is the newest version and nothing is promoted)."""
    return registry.publish(model, snapshot, {**extra, "origin": OFFLINE}, stage=Stage.CANDIDATE)


@dataclass(frozen=True)
class StageChange:
    """A promotion, rollback or rejection that happened.

    ``version`` is the version the action was about (the new production version for
    promote and rollback, the rejected one for reject); ``previous`` the production
    version before it.
    """

    model: str
    version: int
    previous: int | None
    action: str

    @property
    def stage(self) -> Stage:
        """The stage ``version`` is in after the change."""
        return Stage.REJECTED if self.action == "reject" else Stage.PRODUCTION


def _history_path(registry: FileRegistry, model: str) -> Path:
    return registry.root / model / HISTORY_FILE


def history(registry: FileRegistry, model: str) -> list[dict[str, Any]]:
    """Every promote/rollback/reject of ``model``, oldest first."""
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
    prod = [mv.version for mv in registry.versions(model) if mv.stage == Stage.PRODUCTION]
    return max(prod) if prod else None


def _record(
    registry: FileRegistry,
    change: StageChange,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> None:
    line: dict[str, Any] = {
        "action": change.action,
        "version": change.version,
        "previous": change.previous,
        "at": time.time(),
    }
    if reason:
        line["reason"] = reason
    if figures is not None:
        line["by"] = "rollout"
        line["figures"] = figures
    with open(_history_path(registry, change.model), "a") as fh:
        fh.write(json.dumps(line) + "\n")


def _apply(
    registry: FileRegistry,
    change: StageChange,
    version: int,
    stage: Stage,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Set ``version``'s stage, then record ``change`` in the history."""
    try:
        registry.set_stage(change.model, version, stage)
    except StageError:
        raise
    except RegistryError as exc:
        raise StageError(str(exc)) from exc
    _record(registry, change, reason, figures)
    return change


def promote(
    registry: FileRegistry,
    model: str,
    version: int,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Make ``version`` the production version (the previous one is archived);
    ``reason`` and ``figures`` go into the history."""
    try:
        registry.get(model, version)
    except RegistryError as exc:
        raise StageError(str(exc)) from exc
    change = StageChange(model, version, _current(registry, model), "promote")
    return _apply(registry, change, version, Stage.PRODUCTION, reason, figures)


def rollback(registry: FileRegistry, model: str) -> StageChange:
    """Re-promote the production version that preceded the current one."""
    current = _current(registry, model)
    if current is None:
        raise StageError(f"model {model!r} has no production version to roll back from")
    events = history(registry, model)
    if not any(e["action"] == "promote" and e["version"] == current for e in events):
        parent = _usable_parent(registry, model, current)
        if parent is not None:  # a version of the online lineage: back to what it continued
            return revert(registry, model, parent)
    stack = _stack(events)
    while stack and stack[-1] == current:
        stack.pop()
    existing = {mv.version: mv for mv in registry.versions(model)}
    usable = {v for v, mv in existing.items() if mv.stage != Stage.REJECTED}
    target = next((v for v in reversed(stack) if v in usable and v != current), None)
    if target is None:
        older = [v for v, mv in existing.items() if mv.stage == Stage.ARCHIVED and v < current]
        target = max(older) if older else None
    if target is None:
        raise StageError(
            f"model {model!r}: expected an earlier production version to roll back to from "
            f"version {current}, found none"
        )
    return _apply(
        registry, StageChange(model, target, current, "rollback"), target, Stage.PRODUCTION
    )


def _usable_parent(registry: FileRegistry, model: str, version: int) -> int | None:
    """The nearest ``parent_version`` ancestor of ``version`` that exists and is not
    rejected, or ``None``."""
    seen = {version}
    v: Any = registry.get(model, version).metadata.get("parent_version")
    while v is not None and int(v) not in seen:
        seen.add(int(v))
        try:
            mv = registry.get(model, int(v))
        except RegistryError:
            return None  # removed (retention): nothing to walk further
        if mv.stage != Stage.REJECTED:
            return mv.version
        v = mv.metadata.get("parent_version")
    return None


def revert(
    registry: FileRegistry,
    model: str,
    version: int,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Make ``version`` production again as a rollback (recorded as one, with ``reason``
    and ``figures``): how the rollout undoes a promotion that regressed."""
    change = StageChange(model, version, _current(registry, model), "rollback")
    return _apply(registry, change, version, Stage.PRODUCTION, reason, figures)


def promote_lineage(
    registry: FileRegistry,
    model: str,
    version: int,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Promote ``version`` into the online production lineage (the rollout's promotion).

    The online trainer continues from it and the versions it publishes serve as the
    newest, so ``version`` is not pinned as ``production``: it is ``archived`` and the
    promotion is recorded (``previous``: the version serving before)."""
    serving = registry.serving_version(model)
    change = StageChange(model, version, None if serving is None else serving.version, "promote")
    return _apply(registry, change, version, Stage.ARCHIVED, reason, figures)


def rollback_lineage(
    registry: FileRegistry,
    model: str,
    to_version: int,
    promoted: int,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Undo the rollout's promotion of ``promoted``: the online trainer continues from the
    lineage before it again (``to_version``, its last version), and ``promoted`` is
    rejected (never served again). Recorded as a rollback to ``to_version``."""
    change = StageChange(model, to_version, promoted, "rollback")
    return _apply(registry, change, promoted, Stage.REJECTED, reason, figures)


def reject(
    registry: FileRegistry,
    model: str,
    version: int,
    reason: str | None = None,
    figures: dict[str, Any] | None = None,
) -> StageChange:
    """Mark ``version`` rejected: it is never served again.

    The production version cannot be rejected (roll back or promote another one first),
    so rejecting never leaves a model without the version its operators chose.
    """
    try:
        mv = registry.get(model, version)
    except RegistryError as exc:
        raise StageError(str(exc)) from exc
    if mv.stage == Stage.PRODUCTION:
        raise StageError(
            f"model {model!r}: expected a version that is not production, got version "
            f"{version}, which is; roll back or promote another version first"
        )
    change = StageChange(model, version, _current(registry, model), "reject")
    return _apply(registry, change, version, Stage.REJECTED, reason, figures)


def decisions(registry: FileRegistry, model: str) -> dict[int, dict[str, Any]]:
    """The newest history event about each version (promote, rollback, reject), with its
    reason and figures."""
    out: dict[int, dict[str, Any]] = {}
    for e in history(registry, model):
        out[int(e["version"])] = e
    return out


def describe(registry: FileRegistry, model: str) -> list[dict[str, Any]]:
    """One row per version: version, stage, serving and shadow flags, origin, key training
    metrics, the live evaluation (AUC, NE, calibration per traffic) and the last decision
    about it (with its reason and figures)."""
    serving = registry.serving_version(model)
    shadow = registry.shadow_version(model)
    last = decisions(registry, model)
    return [
        _row(registry, mv, serving, shadow, last.get(mv.version)) for mv in registry.versions(model)
    ]


def _row(
    registry: FileRegistry,
    mv: ModelVersion,
    serving: ModelVersion | None,
    shadow: ModelVersion | None,
    decision: dict[str, Any] | None,
) -> dict[str, Any]:
    metrics = mv.metadata.get("metrics") or {}
    keys = ("accuracy", "auc", "logloss", "ne")
    row: dict[str, Any] = {
        "version": mv.version,
        "stage": mv.stage,
        "serving": serving is not None and serving.version == mv.version,
        "shadow": shadow is not None and shadow.version == mv.version,
        "origin": mv.metadata.get("origin"),
        "kind": mv.metadata.get("kind"),
        "learner": mv.metadata.get("learner"),
        "created_at": mv.metadata.get("created_at"),
        **{k: metrics[k] for k in keys if isinstance(metrics.get(k), int | float)},
    }
    live = {
        traffic: {k: r.get(k) for k in ("count", "auc", "ne", "calibration")}
        for traffic, r in registry.evaluation(mv).get("traffic", {}).items()
    }
    if live:
        row["live"] = live
    if decision is not None:
        row["decision"] = {
            k: decision[k] for k in ("action", "reason", "figures", "by", "at") if k in decision
        }
    return row
