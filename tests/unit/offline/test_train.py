"""Batch training without a broker: ordering, holdout, spec inference, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.offline.errors import DatasetError
from streamlearn.offline.train import TrainConfig, infer_spec, load_examples, split_holdout, train


def write_examples(path: Path, n: int = 3000, seed: int = 1) -> Path:
    """A TrainingExample-shaped Parquet: clicks depend on item and position."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 20, n)
    pos = rng.integers(0, 5, n)
    p = 1 / (1 + np.exp(-(items % 4 - 1.5 - 0.4 * pos)))
    labels = (rng.random(n) < p).astype(np.int8)
    feats = [
        json.dumps({"item": f"i{i}", "pos": int(q), "country": "fr"})
        for i, q in zip(items, pos, strict=True)
    ]
    ts = rng.permutation(n).astype(np.float64)  # shuffled: training must sort by ts
    pq.write_table(pa.table({"ts": ts, "label": labels, "features": feats}), path)
    return path


def test_load_orders_by_time_and_holds_out_the_end(tmp_path: Path) -> None:
    ex = load_examples(write_examples(tmp_path / "d.parquet", n=100))
    assert np.all(np.diff(ex.times) >= 0)
    tr, te = split_holdout(ex, 0.25)
    assert (len(tr), len(te)) == (75, 25)
    assert tr.times.max() <= te.times.min()
    with pytest.raises(DatasetError, match="holdout"):
        split_holdout(ex, 1.0)


def test_infer_spec_and_flat_tables(tmp_path: Path) -> None:
    spec = infer_spec([{"a": "x", "n": 1}, {"a": 2, "n": 2.5, "b": None}], hash_bits=10)
    assert (spec.categorical, spec.numeric, spec.hash_bits) == (("a",), ("n",), 10)
    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"clicked": [0, 1], "offset": [1, 2], "u": ["a", "b"]}), flat)
    ex = load_examples(flat, label="clicked")
    assert ex.rows == [{"u": "a"}, {"u": "b"}]
    with pytest.raises(DatasetError, match="label column"):
        load_examples(flat)


def test_same_data_and_seed_give_identical_onnx(tmp_path: Path) -> None:
    data = write_examples(tmp_path / "d.parquet")
    reg = FileRegistry(tmp_path / "reg")
    cfg = TrainConfig(epochs=2, hash_bits=12, params={"alpha": 0.1})
    a = train(data, cfg, reg, "m")
    b = train(data, cfg, reg, "m")
    assert a.version is not None and b.version is not None
    assert a.version.onnx_path.read_bytes() == b.version.onnx_path.read_bytes() == a.onnx
    assert a.metrics["auc"] > 0.65 and a.metrics["count"] == 600
    meta = reg.get("m", 1).metadata
    assert meta["lineage"]["dataset"]["checksum"].startswith("xxh3_128-file:")
    assert meta["lineage"]["train"]["params"] == {"alpha": 0.1}
    assert meta["lineage"]["code"]["package"]
    assert meta["metrics"]["auc"] == a.metrics["auc"]
    # offline versions land as candidates, never the online trainer's resume point
    assert a.version.stage == "candidate" and meta["origin"] == "offline"
    c = train(
        data, TrainConfig(epochs=2, hash_bits=12, params={"alpha": 0.1}, seed=3, shuffle=True)
    )
    assert c.onnx != a.onnx
