import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from streamlearn.models import checks
from streamlearn.models.errors import RegistryError
from streamlearn.models.registry import FileRegistry, Stage
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.zoo import create


def snap(tag: str) -> Snapshot:
    return Snapshot(onnx=f"onnx-{tag}".encode(), state=b"\x80\x04N.", metadata={"learner": tag})


def test_publish_assigns_increasing_versions(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    v1 = reg.publish("ctr", snap("a"), extra={"offsets": {"0": 12}})
    v2 = reg.publish("ctr", snap("b"))
    assert (v1.version, v2.version) == (1, 2)
    assert v1.path == tmp_path / "ctr" / "v00000001"
    meta = json.loads((v1.path / "metadata.json").read_text())
    assert meta["offsets"] == {"0": 12} and meta["model"] == "ctr" and meta["version"] == 1
    assert isinstance(meta["created_at"], float)
    assert reg.read_onnx(v2) == b"onnx-b"
    assert [v.version for v in reg.versions("ctr")] == [1, 2]
    assert reg.latest("ctr") == reg.get("ctr", 2)
    assert reg.models() == ["ctr"]
    with pytest.raises(RegistryError, match="pickle"):
        reg.load_learner(v1)  # a pickled state is refused, never unpickled
    assert not [p for p in (tmp_path / "ctr").iterdir() if p.name.startswith(".publish")]


def test_unknown_model_and_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    assert reg.latest("nope") is None and reg.versions("nope") == []
    assert reg.serving_version("nope") is None
    with pytest.raises(RegistryError, match="version 3"):
        reg.get("nope", 3)
    with pytest.raises(RegistryError, match="model name"):
        reg.publish("../evil", snap("x"))


def test_concurrent_publishers_never_collide(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    results: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for j in range(5):
            mv = FileRegistry(tmp_path).publish("m", snap(f"{i}-{j}"))
            with lock:
                results.append(mv.version)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 21))
    onnx = {reg.read_onnx(v) for v in reg.versions("m")}
    assert len(onnx) == 20


def test_stages_and_serving_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    for tag in "abc":
        reg.publish("ctr", snap(tag))
    assert reg.serving_version("ctr").version == 3  # type: ignore[union-attr]
    assert reg.get("ctr", 1).stage == "none"
    reg.set_stage("ctr", 1, "production")
    assert reg.serving_version("ctr").version == 1  # type: ignore[union-attr]
    reg.set_stage("ctr", 2, "production")
    assert reg.get("ctr", 1).stage == "archived"
    assert reg.get("ctr", 2).stage == "production"
    assert reg.serving_version("ctr").version == 2  # type: ignore[union-attr]
    reg.set_stage("ctr", 2, "archived")
    assert reg.serving_version("ctr").version == 3  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="stage must be one of"):
        reg.set_stage("ctr", 3, "live")
    with pytest.raises(RegistryError):
        reg.set_stage("ctr", 9, "candidate")


def test_stage_members_are_the_strings_on_disk(tmp_path: Path) -> None:
    assert list(Stage) == ["candidate", "production", "archived", "rejected"]
    reg = FileRegistry(tmp_path)
    reg.publish("m", snap("a"))
    cand = reg.publish("m", snap("b"), stage=Stage.CANDIDATE)
    meta = (cand.path / "metadata.json").read_text()
    assert json.loads(meta)["stage"] == "candidate" and "Stage." not in meta
    reg.set_stage("m", 1, Stage.PRODUCTION)
    reg.set_stage("m", 2, Stage.PRODUCTION)  # archives 1
    on_disk = (tmp_path / "m" / "stages.json").read_text()
    assert json.loads(on_disk) == {"1": "archived", "2": "production"}
    again = FileRegistry(tmp_path)  # read back: plain strings, equal to the members
    assert again.get("m", 2).stage == Stage.PRODUCTION == "production"
    assert type(again.get("m", 1).stage) is str and again.get("m", 1).stage == Stage.ARCHIVED
    again.set_stage("m", 1, "rejected")  # a plain string is still taken (Python callers)
    assert again.get("m", 1).stage == Stage.REJECTED
    assert json.dumps({"stage": Stage.REJECTED}) == '{"stage": "rejected"}'
    with pytest.raises(RegistryError, match="one of candidate, production, archived, rejected"):
        reg.set_stage("m", 1, "live")
    with pytest.raises(RegistryError, match="one of candidate, rejected, got 'archived'"):
        reg.publish("m", snap("c"), stage=Stage.ARCHIVED)


def test_corrupt_state_raises_registry_error(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    mv = reg.publish("m", Snapshot(onnx=b"", state=b"garbage", metadata={}))
    with pytest.raises(RegistryError, match="learner state"):
        reg.load_learner(mv)


def test_learner_state_round_trips_and_tampering_is_refused(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    learner = create("ftrl", checks.CHECK_SPEC, negative_rate=0.5)
    rows, ys = checks.make_stream(300, 0)
    learner.learn_many(rows, ys)
    mv = reg.publish("m", learner.snapshot())
    assert (mv.path / "state.npz").is_file() and not (mv.path / "state.pkl").exists()
    loaded = reg.load_learner(mv)
    np.testing.assert_array_equal(loaded.predict_proba_many(rows), learner.predict_proba_many(rows))
    state = mv.path / "state.npz"
    data = bytearray(state.read_bytes())
    data[100] ^= 1
    state.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="checksum mismatch"):
        reg.load_learner(mv)
    state.unlink()
    (mv.path / "state.pkl").write_bytes(pickle.dumps(learner))
    with pytest.raises(RegistryError, match="refusing the pickled learner state"):
        reg.load_learner(mv)


def test_registry_module_does_not_import_torch_or_river() -> None:
    import subprocess
    import sys

    code = (
        "import sys, streamlearn.models.registry, streamlearn.models.features, "
        "streamlearn.models.snapshot; "
        "bad = [m for m in ('torch', 'river') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_serving_only_versions_and_retention(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    light = Snapshot(onnx=b"g", state=b"", metadata={"learner": "x", "serving_only": True})
    kinds = "FLLFLLLCLLL"  # full, serving-only (light), a staged candidate
    for k in kinds:
        reg.publish("m", light if k == "L" else snap(k))
    published_staged = Snapshot(b"g", b"", {"serving_only": True, "stage": "candidate"})
    reg.publish("m", published_staged)  # version 12: published as a candidate
    for _ in range(3):
        reg.publish("m", light)
    reg.set_stage("m", kinds.index("C") + 1, "candidate")
    v2 = reg.get("m", 2)
    assert v2.serving_only and not (v2.path / "state.npz").exists()
    with pytest.raises(RegistryError, match="serving-only"):
        reg.load_learner(v2)
    (tmp_path / "m" / ".pruned-v00000099-1").mkdir()  # left by a prune that died
    deleted = reg.prune("m", keep=3, keep_resumable=1, protect=[2])
    # kept: the newest 3 (13-15), the newest with a state (8: the candidate), staged (8),
    # published with a stage (12), protected (2)
    assert [mv.version for mv in reg.versions("m")] == [2, 8, 12, 13, 14, 15]
    assert deleted == [1, 3, 4, 5, 6, 7, 9, 10, 11]
    assert not list((tmp_path / "m").glob(".pruned-*"))
    assert reg.publish("m", light).version == 16  # numbering goes on
    assert reg.prune("m", keep=10) == []
    with pytest.raises(RegistryError, match="at least 1"):
        reg.prune("m", keep=0)


def test_published_stage_serving_and_shadow(tmp_path: Path) -> None:
    """A candidate is never served while anything else can be; it is the shadow."""
    reg = FileRegistry(tmp_path)
    snap = Snapshot(b"onnx", b"", {"kind": "ctr"})
    only = reg.publish("m", snap, stage="candidate")
    assert only.stage == "candidate"
    assert reg.serving_version("m").version == 1  # type: ignore[union-attr]  # nothing else
    assert reg.shadow_version("m") is None  # it is the one serving
    reg.publish("m", snap)  # 2: an online version
    reg.publish("m", snap, stage="candidate")  # 3: newest, a candidate
    bad = reg.publish("m", snap, stage="rejected")  # 4
    assert bad.stage == "rejected" and bad.metadata["stage"] == "rejected"
    assert reg.serving_version("m").version == 2  # type: ignore[union-attr]
    assert reg.shadow_version("m").version == 3  # type: ignore[union-attr]
    reg.set_stage("m", 3, "rejected")  # stages.json overrides the published stage
    assert reg.shadow_version("m").version == 1  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="published as one of"):
        reg.publish("m", snap, stage="production")


def test_evaluation_files(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    mv = reg.publish("m", Snapshot(b"onnx", b"", {}))
    assert reg.evaluation(mv) == {}
    reg.write_evaluation("m", 1, {"traffic": {"served": {"auc": 0.7}}})
    assert reg.evaluation(mv)["traffic"]["served"]["auc"] == 0.7
    reg.write_evaluation("m", 9, {"x": 1})  # a version that is gone: skipped
    assert reg.version_numbers("m") == [1]


def _age(*paths: Path) -> None:
    """Make ``paths`` look untouched for a minute (polls trust a settled directory)."""
    import os
    import time

    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


def test_polls_read_no_file_when_nothing_changed_and_each_metadata_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlearn.models.registry as registry_module

    reg = FileRegistry(tmp_path)
    light = Snapshot(b"g", b"", {"serving_only": True})
    for _ in range(30):
        reg.publish("m", light)
    reg.publish("m", light, stage="candidate")  # 31: the shadow
    model_dir = tmp_path / "m"
    _age(model_dir, model_dir / "stages.json")
    first = FileRegistry(tmp_path)  # a new reader: serving starting on an aged registry
    assert (first.serving_version("m").version, first.shadow_version("m").version) == (30, 31)  # type: ignore[union-attr]
    assert first.metadata_reads <= 31

    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError("a poll read the file system beyond stat")

    with monkeypatch.context() as m:  # nothing changed: not even a directory listing
        m.setattr(registry_module.os, "listdir", no_io)
        m.setattr("builtins.open", no_io)
        for _ in range(3):
            assert first.serving_version("m").version == 30  # type: ignore[union-attr]
            assert first.shadow_version("m").version == 31  # type: ignore[union-attr]

    reads = first.metadata_reads
    reg.publish("m", light)  # 32: a new serving-only version
    assert first.serving_version("m").version == 32  # type: ignore[union-attr]
    assert first.shadow_version("m").version == 31  # type: ignore[union-attr]
    assert first.metadata_reads == reads + 1  # only the new version's metadata
    reg.set_stage("m", 31, "rejected")
    assert first.shadow_version("m") is None
    reg.set_stage("m", 31, "candidate")
    assert first.shadow_version("m").version == 31  # type: ignore[union-attr]
    assert first.metadata_reads == reads + 1  # stages changed: metadata is remembered
    reg.set_stage("m", 5, "production")
    assert first.serving_version("m").version == 5  # type: ignore[union-attr]
    assert first.metadata_reads == reads + 2  # version 5 had not been read


def test_a_version_removed_or_replaced_by_hand_is_seen(tmp_path: Path) -> None:
    import shutil

    reg = FileRegistry(tmp_path)
    light = Snapshot(b"g", b"", {"serving_only": True, "learner": "a"})
    reg.publish("m", light)
    reg.publish("m", light)
    model_dir = tmp_path / "m"
    _age(model_dir)
    assert reg.serving_version("m").version == 2  # type: ignore[union-attr]
    shutil.rmtree(model_dir / "v00000002")
    assert reg.serving_version("m").version == 1  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="found none"):
        reg.get("m", 2)
    again = reg.publish("m", Snapshot(b"g", b"", {"serving_only": True, "learner": "b"}))
    assert again.version == 2  # the number is taken again, by other metadata
    assert reg.serving_version("m").metadata["learner"] == "b"  # type: ignore[union-attr]
    assert reg.get("m", 2).metadata["learner"] == "b"


def test_files_published_with_a_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    mv = reg.publish("m", snap("a"), files={"rollout.json": b'{"x": 1}'})
    assert reg.read_file(mv, "rollout.json") == b'{"x": 1}'
    assert reg.read_file(mv, "other.json") is None
    for name in ("metadata.json", "../x.json", "Rollout.json", "noext"):
        with pytest.raises(RegistryError, match="own file"):
            reg.publish("m", snap("b"), files={name: b"{}"})
    assert reg.version_numbers("m") == [1]


def test_a_registry_pickles_without_its_caches(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path)
    reg.publish("m", snap("a"))
    assert reg.serving_version("m") is not None
    copy = pickle.loads(pickle.dumps(reg))
    assert copy.root == reg.root and copy.metadata_reads == 0
    assert copy.serving_version("m").version == 1  # type: ignore[union-attr]
