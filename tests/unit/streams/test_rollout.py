"""The trainer's rollout without a broker: per-version evaluation that survives a restart,
a bad candidate rejected, a good one promoted (the trainer continues from it), a
regression rolled back, and a snapshot failing its ONNX parity never served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from streamlearn.models.features import FeatureSpec
from streamlearn.models.parity import ParityError, onnx_parity
from streamlearn.models.protocol import Learner
from streamlearn.models.registry import FileRegistry
from streamlearn.models.rollout import RolloutConfig
from streamlearn.models.stages import describe, history, publish_candidate
from streamlearn.streams.contracts import TrainingExample, decode_model_update
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.rollout import ROLLOUT_FILE
from streamlearn.streams.learning.trainer import OnlineTrainer, TrainerConfig, is_online
from streamlearn.streams.runtime.processor import Output, Record
from tests.example import FEED

TOPICS = Topics("ro.")
TOPIC = TOPICS.training_examples("feed")
SPEC = FeatureSpec(categorical=("user_id", "item_id"), hash_bits=12)
DEF = FEED.with_spec(SPEC).with_learner(params={"alpha": 0.2})
RNG = np.random.default_rng(0)
USER_BIAS = RNG.normal(-1.5, 1.0, 50)
ITEM_BIAS = RNG.normal(0.0, 1.0, 30)


class World:
    """Examples drawn from a hidden click model, offsets counting up."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.offset = 0

    def rows(self, n: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        u = self.rng.integers(0, 50, n)
        i = self.rng.integers(0, 30, n)
        p = 1 / (1 + np.exp(-(USER_BIAS[u] + ITEM_BIAS[i])))
        y = (self.rng.random(n) < p).astype(int)
        return [{"user_id": f"u{a}", "item_id": f"i{b}"} for a, b in zip(u, i, strict=True)], y

    def records(
        self,
        n: int,
        served_version: int,
        production: Learner | None = None,
        shadow: tuple[int, Learner] | None = None,
        served_scores: np.ndarray | None = None,
    ) -> list[Record]:
        rows, y = self.rows(n)
        served = (
            served_scores
            if served_scores is not None
            else (production.predict_proba_many(rows) if production else np.full(n, 0.2))
        )
        shadow_p = shadow[1].predict_proba_many(rows) if shadow else None
        out = []
        for k in range(n):
            ex = TrainingExample(
                request_id=f"r{self.offset}",
                user_id=rows[k]["user_id"],
                item_id=rows[k]["item_id"],
                surface="feed",
                ts=float(self.offset),
                label=int(y[k]),  # type: ignore[arg-type]
                features=rows[k],
                served_version=served_version,
                served_score=float(served[k]),
                shadow_version=None if shadow is None else shadow[0],
                shadow_score=None if shadow_p is None else float(shadow_p[k]),
            )
            out.append(Record(TOPIC, 0, self.offset, b"k", ex))
            self.offset += 1
        return out


def _trainer(root: Path, **rollout: Any) -> OnlineTrainer:
    cfg = TrainerConfig(
        definition=DEF,
        batch_size=64,
        flush_after_s=1e9,
        snapshot_interval_s=0.0,  # publish at every advance
        rollout=RolloutConfig(**{"min_examples": 1500, "watch_examples": 1500, **rollout}),
    )
    t = OnlineTrainer(TOPICS, FileRegistry(root / "registry"), cfg, clock=lambda: 0.0)
    t.assign([(TOPIC, 0)])
    return t


def _feed(t: OnlineTrainer, records: list[Record]) -> list[Output]:
    for s in range(0, len(records), 500):
        t.process(records[s : s + 500])
    t._learn_pending()
    return t.advance({(TOPIC, 0): records[-1].offset + 1})


def _candidate(reg: FileRegistry, world: World, shuffled: bool, n: int = 6000) -> int:
    learner = DEF.create(seed=1)
    rows, y = world.rows(n)
    if shuffled:
        y = np.random.default_rng(9).permutation(y)
    idx, val = learner.featuriser.transform_many(rows)
    for s in range(0, n, 256):
        learner.learn_featurised(idx[s : s + 256], val[s : s + 256], y[s : s + 256].astype(float))
    return publish_candidate(reg, "feed", learner.snapshot(), {"trainer": "test"}).version


def _updates(outputs: list[Output]) -> list[dict[str, Any]]:
    return [
        {"version": u.version, "kind": u.kind, **u.metrics}
        for u in (decode_model_update(o.value) for o in outputs)
    ]


def test_a_bad_candidate_is_rejected_with_its_figures_and_never_served(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    reg = t.registry
    world = World(1)
    assert t.tick(0.0)  # version 1
    _feed(t, world.records(3000, 1))
    prod_version = t.version
    bad = _candidate(reg, world, shuffled=True)
    assert reg.shadow_version("feed").version == bad  # type: ignore[union-attr]
    assert reg.serving_version("feed").version == prod_version  # type: ignore[union-attr]
    _feed(t, world.records(200, prod_version, t.learner))  # the trainer takes it in
    assert t.rollout.challenger is not None and t.rollout.challenger.root == bad
    arm = t.rollout.challenger.learner
    outputs = _feed(t, world.records(800, t.version, t.learner, (bad, arm)))
    # the arm learned and published its state as a candidate, which serving now shadows
    arm_version = t.rollout.challenger.versions[-1]
    assert arm_version > bad and reg.shadow_version("feed").version == arm_version  # type: ignore[union-attr]
    outputs += _feed(t, world.records(800, t.version, t.learner, (arm_version, arm)))
    assert t.rollout.challenger is None
    assert reg.get("feed", bad).stage == "rejected" and reg.shadow_version("feed") is None
    event = history(reg, "feed")[-1]
    assert event["action"] == "reject" and event["by"] == "rollout"
    fig = event["figures"]
    assert fig["examples"] >= 1500 and fig["candidate_ne"] > fig["production_ne"], fig
    stage_updates = [u for u in _updates(outputs) if u["kind"] == "stage"]
    assert stage_updates and stage_updates[0]["version"] == bad
    assert stage_updates[0]["action"] == "reject" and stage_updates[0]["figures"] == fig
    # every version of its arm is rejected too, and `models list` shows the decision
    rows = {r["version"]: r for r in describe(reg, "feed")}
    assert rows[bad]["decision"]["figures"] == fig
    arm_versions = [r for r in rows.values() if r["origin"] == "shadow"]
    assert arm_versions and all(r["stage"] == "rejected" for r in arm_versions)
    assert all(not r["serving"] for r in [rows[bad], *arm_versions])


def test_a_good_candidate_is_promoted_and_a_regression_rolled_back(tmp_path: Path) -> None:
    t = _trainer(tmp_path, rollback_margin=0.05)
    reg = t.registry
    world = World(2)
    t.tick(0.0)
    _feed(t, world.records(400, 1))  # production has seen little
    good = _candidate(reg, world, shuffled=False, n=20_000)
    _feed(t, world.records(100, t.version, t.learner))
    ch = t.rollout.challenger
    assert ch is not None and ch.root == good
    before = t.version
    outputs = _feed(t, world.records(1600, t.version, t.learner, (good, ch.learner)))
    # promoted: the trainer continues from the candidate's arm, a new lineage
    promoted = history(reg, "feed")[-1]
    assert (
        promoted["action"] == "promote"
        and promoted["figures"]["candidate_ne"] < (promoted["figures"]["production_ne"])
    )
    assert t.learner is ch.learner and t.rollout.fallback is not None
    latest = reg.latest("feed")
    assert latest is not None and latest.metadata["parent_version"] == promoted["version"]
    assert reg.serving_version("feed").version == latest.version  # type: ignore[union-attr]
    assert reg.get("feed", promoted["version"]).stage == "archived"  # not pinned
    assert any(u["kind"] == "stage" and u["action"] == "promote" for u in _updates(outputs))
    # the promoted lineage serves terribly: rolled back to the fallback, which kept learning
    watch = t.rollout.watch
    assert watch is not None and watch.previous == before
    fallback = t.rollout.fallback
    bad_scores = np.full(1600, 0.97)
    _feed(t, world.records(1600, latest.version, served_scores=bad_scores))
    back = history(reg, "feed")[-1]
    assert back["action"] == "rollback" and back["version"] == before, back
    assert back["figures"]["ne"] > back["figures"]["reference_ne"] + 0.05
    assert reg.get("feed", promoted["version"]).stage == "rejected"
    assert t.learner is fallback and t.rollout.watch is None
    assert reg.latest("feed").metadata["parent_version"] == before  # type: ignore[union-attr]


def test_per_version_evaluation_is_written_exported_and_resumed(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    reg = t.registry
    world = World(3)
    t.tick(0.0)
    _feed(t, world.records(2000, 1))
    v2 = t.version
    _feed(t, world.records(2000, v2, t.learner))
    ev = reg.evaluation(reg.get("feed", v2))["traffic"]
    assert ev["served"]["count"] == 2000 and ev["served"]["auc"] > 0.6
    assert ev["progressive"]["count"] == 2000  # what its learner scored before learning
    got = REGISTRY.get_sample_value(
        "streamlearn_version_metric",
        {"model": "feed", "version": str(v2), "traffic": "served", "metric": "auc"},
    )
    assert got == pytest.approx(ev["served"]["auc"])
    before = t.rollout.evaluation.report(v2)
    newest = reg.latest("feed")
    assert newest is not None and "rollout" not in newest.metadata  # a file of its own
    assert (newest.path / ROLLOUT_FILE).exists()
    again = _trainer(tmp_path)  # a restart resumes the tallies from its snapshot
    again.assign([(TOPIC, 0)])
    assert again.rollout.evaluation.report(v2) == before


def test_rollout_state_in_the_metadata_of_an_older_version_is_resumed(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    world = World(5)
    t.tick(0.0)
    _feed(t, world.records(2000, 1))
    v2 = t.version
    _feed(t, world.records(2000, v2, t.learner))
    before = t.rollout.evaluation.report(v2)
    newest = t.registry.latest("feed")
    assert newest is not None
    # as a trainer published it before the state had its own file
    meta = json.loads((newest.path / "metadata.json").read_text())
    meta["rollout"] = json.loads((newest.path / ROLLOUT_FILE).read_bytes())
    (newest.path / "metadata.json").write_text(json.dumps(meta))
    (newest.path / ROLLOUT_FILE).unlink()
    again = _trainer(tmp_path)
    again.assign([(TOPIC, 0)])
    assert again.rollout.evaluation.report(v2) == before


def test_a_snapshot_failing_parity_is_published_rejected_and_not_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _trainer(tmp_path)
    world = World(4)
    t.tick(0.0)

    def broken(*args: object, **kw: object) -> float:
        raise ParityError("expected the ONNX graph to match (test)", 0.5)

    monkeypatch.setattr("streamlearn.streams.learning.trainer.onnx_parity", broken)
    outputs = _feed(t, world.records(500, 1))
    latest = t.registry.latest("feed")
    assert latest is not None and latest.stage == "rejected" and latest.version == 2
    assert t.registry.serving_version("feed").version == 1  # type: ignore[union-attr]
    assert all(u["version"] != 2 for u in _updates(outputs))


def test_parity_runs_on_rows_every_time_and_they_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlearn.streams.learning.rollout as rollout_module
    import streamlearn.streams.learning.trainer as trainer_module

    checked: list[int] = []  # rows each parity check ran on
    real = trainer_module.onnx_parity

    def counting(snap: Any, learner: Any, idx: np.ndarray, val: np.ndarray) -> float:
        checked.append(len(idx))
        return real(snap, learner, idx, val)

    monkeypatch.setattr(trainer_module, "onnx_parity", counting)
    monkeypatch.setattr(rollout_module, "onnx_parity", counting)
    t = _trainer(tmp_path)
    reg = t.registry
    world = World(5)
    t.tick(0.0)  # version 1, before any example: checked on rows made from its spec
    first = reg.get("feed", 1)
    assert first.metadata["parity_rows"] == {"count": 256, "from": "spec"}
    assert checked == [256] and reg.rows(first) == []
    _feed(t, world.records(300, 1))
    full = reg.latest("feed")
    assert full is not None and not full.serving_only
    assert full.metadata["parity_rows"] == {"count": 256, "from": "learned"}
    saved = reg.rows(full)
    assert len(saved) == 256 and saved[-1] == t.rollout.sample_rows[-1]

    # a restarted trainer checks at once on the rows its resume point was published with:
    # a candidate taken in right after the restart is checked, not waved through
    again = _trainer(tmp_path)
    assert again.rollout.sample_rows == saved
    checked.clear()
    cand = _candidate(reg, world, shuffled=False, n=500)
    again.tick(0.0)
    again.publish()
    assert again.rollout.challenger is not None and again.rollout.challenger.root == cand
    assert checked and all(n == 256 for n in checked)

    # a resume point without rows (an older version): nothing is published on an empty
    # sample; once examples are in, it is, checked on them
    (tmp_path / "registry" / "feed" / f"v{again.version:08d}" / "rows.json").unlink()
    old = _trainer(tmp_path)
    before = reg.version_numbers("feed")
    assert old.rollout.sample_rows == [] and old.publish() == []
    assert reg.version_numbers("feed") == before
    _feed(old, world.records(100, old.version))
    latest = [mv for mv in reg.versions("feed") if is_online(mv)][-1]
    assert latest.version > before[-1]
    assert latest.metadata["parity_rows"] == {"count": 100, "from": "learned"}


def test_parity_on_no_rows_is_an_error_not_a_pass() -> None:
    learner = DEF.create(seed=0)
    idx, val = learner.featuriser.transform_many([])
    with pytest.raises(ParityError, match="got none"):
        onnx_parity(learner.snapshot(), learner, idx, val)
