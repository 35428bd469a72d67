"""Promotion history, rollback and rejection on a file registry, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import StageError
from models.registry import FileRegistry
from models.snapshot import Snapshot
from models.stages import describe, history, promote, reject, rollback


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
