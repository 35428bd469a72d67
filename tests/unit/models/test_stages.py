"""Promotion history, rollback and rejection on a file registry, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamlearn.models.errors import StageError
from streamlearn.models.registry import FileRegistry, Stage
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.stages import describe, history, promote, reject, rollback
from streamlearn.streams.contracts import decode_model_update, encode, stage_update


def test_rollback_walks_back_the_promotion_stack(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for i in range(3):
        reg.publish("m", Snapshot(b"onnx", b"", {"kind": "ctr", "metrics": {"auc": 0.5 + i / 10}}))
    with pytest.raises(StageError, match="no production version"):
        rollback(reg, "m")
    promote(reg, "m", 1)
    promote(reg, "m", 3)
    promote(reg, "m", 2)
    assert reg.serving_version("m").version == 2  # type: ignore[union-attr]
    assert rollback(reg, "m").version == 3
    assert rollback(reg, "m").version == 1
    assert reg.serving_version("m").version == 1  # type: ignore[union-attr]
    with pytest.raises(StageError, match="found none"):
        rollback(reg, "m")
    assert [e["action"] for e in history(reg, "m")] == ["promote"] * 3 + ["rollback"] * 2
    rows = describe(reg, "m")
    assert [(r["version"], r["stage"], r["serving"]) for r in rows] == [
        (1, "production", True), (2, "archived", False), (3, "archived", False)]  # fmt: skip
    with pytest.raises(StageError, match="expected version 9"):
        promote(reg, "m", 9)


def test_rollback_without_history_uses_the_newest_older_archived(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for _ in range(3):
        reg.publish("m", Snapshot(b"onnx", b"", {}))
    reg.set_stage("m", 1, "production")
    reg.set_stage("m", 2, "production")  # archives 1
    assert rollback(reg, "m").version == 1


def test_reject_is_never_served_nor_rolled_back_to(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for _ in range(3):
        reg.publish("m", Snapshot(b"onnx", b"", {}))
    assert reg.serving_version("m").version == 3  # type: ignore[union-attr]
    change = reject(reg, "m", 3, reason="NE worse than production")
    assert (change.action, change.stage, change.previous) == ("reject", "rejected", None)
    assert reg.serving_version("m").version == 2  # type: ignore[union-attr]
    promote(reg, "m", 1)
    promote(reg, "m", 2)
    with pytest.raises(StageError, match="not production, got version 2"):
        reject(reg, "m", 2)
    reject(reg, "m", 1)
    with pytest.raises(StageError, match="found none"):  # 1 is rejected: nothing to go back to
        rollback(reg, "m")
    assert history(reg, "m")[0] == {**history(reg, "m")[0], "action": "reject", "version": 3}
    assert history(reg, "m")[0]["reason"] == "NE worse than production"
    with pytest.raises(StageError, match="expected version 7"):
        reject(reg, "m", 7)
    reg.set_stage("m", 2, "rejected")  # by hand: the registry itself does not forbid it
    assert reg.serving_version("m") is None  # every version rejected: nothing to serve


def test_the_rollout_promotes_into_the_lineage_and_rolls_back_with_figures(
    tmp_path: Path,
) -> None:
    from streamlearn.models.stages import promote_lineage, rollback_lineage

    reg = FileRegistry(tmp_path)
    for _ in range(2):
        reg.publish("m", Snapshot(b"onnx", b"", {"origin": "online"}))
    reg.publish("m", Snapshot(b"onnx", b"", {"origin": "offline"}), stage="candidate")  # 3
    assert reg.shadow_version("m").version == 3  # type: ignore[union-attr]
    fig = {"candidate_ne": 0.8, "production_ne": 0.9, "examples": 2000}
    change = promote_lineage(reg, "m", 3, "NE 0.8 <= 0.9", fig)
    assert (change.action, change.previous) == ("promote", 2)
    # not pinned: the trainer continues from it, its next versions serve as the newest
    assert reg.get("m", 3).stage == "archived" and reg.shadow_version("m") is None
    reg.publish("m", Snapshot(b"onnx", b"", {"origin": "online", "parent_version": 3}))
    assert reg.serving_version("m").version == 4  # type: ignore[union-attr]
    back = rollback_lineage(reg, "m", 2, 3, "NE regressed", {"ne": 1.1})
    assert (back.action, back.version, back.previous) == ("rollback", 2, 3)
    assert reg.get("m", 3).stage == "rejected"
    rows = {r["version"]: r for r in describe(reg, "m")}
    assert rows[3]["decision"]["action"] == "promote"  # the newest event about version 3
    assert rows[2]["decision"] == {
        **rows[2]["decision"], "action": "rollback", "by": "rollout", "figures": {"ne": 1.1}
    }  # fmt: skip
    assert history(reg, "m")[0]["figures"] == fig


def test_rollback_of_an_online_version_returns_to_its_parent(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    reg.publish("m", Snapshot(b"onnx", b"", {}))
    reg.publish("m", Snapshot(b"onnx", b"", {"parent_version": 1}))
    reg.publish("m", Snapshot(b"onnx", b"", {"parent_version": 2}))
    reg.set_stage("m", 2, "rejected")
    reg.set_stage("m", 3, "production")  # e.g. pinned by hand
    assert rollback(reg, "m").version == 1  # its parent 2 is rejected: the one before


def test_a_change_names_its_stage_as_on_the_wire(tmp_path: Path) -> None:
    """``StageChange.stage`` is a :class:`Stage`; announced, it is the plain string."""
    reg = FileRegistry(tmp_path)
    for _ in range(2):
        reg.publish("m", Snapshot(b"onnx", b"", {}))
    done = promote(reg, "m", 1)
    assert done.stage is Stage.PRODUCTION and reject(reg, "m", 2).stage is Stage.REJECTED
    raw = encode(stage_update("m", done.version, done.stage, done.previous, {}))
    assert b'"stage":"production"' in raw
    assert decode_model_update(raw).metrics["stage"] == Stage.PRODUCTION
    assert json.loads((tmp_path / "m" / "stages.json").read_text()) == {
        "1": "production", "2": "rejected"}  # fmt: skip
