"""Promotion history and rollback on a file registry, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import FileRegistry
from models.snapshot import Snapshot
from offline.errors import PromotionError
from offline.promotion import describe, history, promote, rollback


def test_rollback_walks_back_the_promotion_stack(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for i in range(3):
        reg.publish("m", Snapshot(b"onnx", b"", {"kind": "ctr", "metrics": {"auc": 0.5 + i / 10}}))
    with pytest.raises(PromotionError, match="no production version"):
        rollback(reg, "m")
    promote(reg, "m", 1)
    promote(reg, "m", 3)
    promote(reg, "m", 2)
    assert reg.serving_version("m").version == 2  # type: ignore[union-attr]
    assert rollback(reg, "m").version == 3
    assert rollback(reg, "m").version == 1
    assert reg.serving_version("m").version == 1  # type: ignore[union-attr]
    with pytest.raises(PromotionError, match="found none"):
        rollback(reg, "m")
    assert [e["action"] for e in history(reg, "m")] == ["promote"] * 3 + ["rollback"] * 2
    rows = describe(reg, "m")
    assert [(r["version"], r["stage"], r["serving"]) for r in rows] == [
        (1, "production", True), (2, "archived", False), (3, "archived", False)]  # fmt: skip
    with pytest.raises(PromotionError, match="expected version 9"):
        promote(reg, "m", 9)


def test_rollback_without_history_uses_the_newest_older_archived(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for _ in range(3):
        reg.publish("m", Snapshot(b"onnx", b"", {}))
    reg.set_stage("m", 1, "production")
    reg.set_stage("m", 2, "production")  # archives 1
    assert rollback(reg, "m").version == 1
