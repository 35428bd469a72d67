"""The built-in ``retrain`` flow on a dataset file (no broker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.models.registry import FileRegistry
from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow import FlowStepError, run_flow
from streamlearn.offline.flow.retrain import retrain, scope_learner_params
from tests.unit.offline.test_train import write_examples


def test_retrain_publishes_with_flow_lineage_and_reruns_from_cache(tmp_path: Path) -> None:
    data = write_examples(tmp_path / "ex.parquet", n=2000)
    reg = FileRegistry(tmp_path / "registry")
    # toy features, not the feed model's: the spec is inferred from them
    params = {
        "dataset": str(data),
        "model": "feed",
        "hash_bits": 12,
        "epochs": 2,
        "ftrl.alpha": 0.2,
        "spec": "infer",
    }
    res = run_flow(retrain, params, root=tmp_path / "flows", resources={"registry": reg})
    assert res.outputs["publish"]["version"] == 1
    assert res.outputs["evaluate"]["auc"] > 0.65 and res.outputs["evaluate"]["count"] == 400
    assert Path(res.outputs["export"].onnx_path).read_bytes() == res.outputs["export"].snapshot.onnx

    meta = reg.get("feed", 1).metadata
    lineage = meta["lineage"]
    assert lineage["trainer"] == "streamlearn.offline.flow:retrain"
    assert lineage["train"]["params"] == {"alpha": 0.2} and lineage["train"]["epochs"] == 2
    assert lineage["dataset"]["checksum"].startswith("xxh3_128-file:")
    flow = lineage["flow"]
    assert flow["flow"] == "retrain" and flow["run_id"] == res.record["run_id"]
    assert set(flow["steps"]) == {"replay", "train", "evaluate", "export", "publish"}
    assert flow["steps"]["train"]["inputs"] == {"replay": res.record["steps"]["replay"]["key"]}
    assert flow["steps"]["evaluate"]["output"]["auc"] == meta["metrics"]["auc"]

    # the served graph scores the same as the learner
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    idx, val = Featuriser(spec).transform_many([{"item": "i3", "pos": 1, "country": "fr"}])
    session = ort.InferenceSession(reg.read_onnx(reg.get("feed", 1)))
    learner = res.outputs["train"].learner
    np.testing.assert_allclose(
        session.run(["prob"], {"idx": idx, "val": val})[0],
        learner.predict_featurised(idx, val),
        atol=1e-5,
    )

    again = run_flow(retrain, params, root=tmp_path / "flows", resources={"registry": reg})
    assert {s["status"] for s in again.record["steps"].values()} == {"cached"}
    assert [v.version for v in reg.versions("feed")] == [1]  # not published twice
    assert retrain.metrics is not None
    assert retrain.metrics(again.outputs)["version"] == 1


def test_changed_dataset_content_invalidates_the_replay(tmp_path: Path) -> None:
    data = write_examples(tmp_path / "ex.parquet", n=500)
    params = {"dataset": str(data), "model": "feed", "hash_bits": 10, "spec": "infer"}
    root = tmp_path / "flows"
    a = run_flow(retrain, params, root=root, until="evaluate")
    write_examples(data, n=500, seed=2)  # same path, other rows
    b = run_flow(retrain, params, root=root, until="evaluate")
    assert a.record["steps"]["replay"]["key"] != b.record["steps"]["replay"]["key"]
    assert b.record["steps"]["train"]["status"] == "executed"


def test_learner_params_scoped_by_learner() -> None:
    base = {"learner": "fm", "lr": 0.1, "ftrl.alpha": 0.3, "fm.factors": 4}
    assert scope_learner_params(base) == {"learner": "fm", "lr": 0.1, "factors": 4}
    assert scope_learner_params({**base, "learner": "ftrl"}) == {
        "learner": "ftrl",
        "lr": 0.1,
        "alpha": 0.3,
    }
    with pytest.raises(FlowError, match=r"learner among .*got 'svm.c'"):
        scope_learner_params({"learner": "ftrl", "svm.c": 1})


def test_wrong_learner_param_and_missing_broker_fail_their_step(tmp_path: Path) -> None:
    data = write_examples(tmp_path / "ex.parquet", n=300)
    with pytest.raises(FlowStepError, match=r"step 'train'.*learner 'ftrl' must be among") as e:
        run_flow(
            retrain,
            {"dataset": str(data), "model": "feed", "hash_bits": 10, "lr": 1},
            root=tmp_path,
        )
    assert e.value.record["steps"]["replay"]["status"] == "executed"
    with pytest.raises(FlowStepError, match=r"step 'replay'.*resource 'kafka'.*bootstrap-servers"):
        run_flow(retrain, {"model": "feed"}, root=tmp_path)
