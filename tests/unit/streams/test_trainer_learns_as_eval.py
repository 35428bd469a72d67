"""One learning path: the online trainer learns exactly as ``streamlearn eval`` does.

The same training examples go to :class:`OnlineTrainer` (as decoded records, in
arrival order, in the trainer's own micro-batches) and to ``eval`` (as a replayed file of
the same rows). At the same settings both report the same progressive metrics, for
every learner and whatever batch sizes each side uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry
from streamlearn.offline.prequential import EvalConfig, progressive_validation
from streamlearn.streams.contracts import TrainingExample
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.trainer import OnlineTrainer, TrainerConfig
from streamlearn.streams.runtime.processor import Record
from tests.example import FEED

N = 1500


def examples(n: int = N, seed: int = 0) -> list[TrainingExample]:
    """Sessions (one user 50 rows in a row), Zipf-popular items, a numeric count."""
    rng = np.random.default_rng(seed)
    users = np.repeat(rng.integers(0, 200, n // 50 + 1), 50)[:n]
    items = np.minimum(rng.zipf(1.4, n), 300)
    counts = rng.lognormal(6, 2, n)
    logit = -1.0 + np.where(items < 5, 1.2, -0.4) + 0.3 * (users % 3) - 0.1 * np.log1p(counts)
    labels = rng.random(n) < 1 / (1 + np.exp(-logit))
    return [
        TrainingExample(
            request_id=f"r{i}",
            user_id=f"u{u}",
            item_id=f"i{it}",
            surface="feed",
            ts=float(i),
            label=int(y),
            features={"user_id": f"u{u}", "item_id": f"i{it}", "views": float(c)},
            served_version=0,
            served_score=0.5,
        )
        for i, (u, it, c, y) in enumerate(zip(users, items, counts, labels, strict=True))
    ]


# ftrl, fm and deep's wide part learn one example at a time, deep's deep part in steps of
# 32 examples counted across calls: any batch sizes agree (eval's default is 1024).
@pytest.mark.parametrize(("learner", "trainer_batch"), [("ftrl", 256), ("fm", 7), ("deep", 100)])
def test_trainer_and_eval_report_the_same_progressive_metrics(
    tmp_path: Path, learner: str, trainer_batch: int
) -> None:
    exs = examples()
    spec = FeatureSpec(categorical=("item_id", "user_id"), numeric=("views",), hash_bits=14)
    topics = Topics("t.")
    topic = topics.training_examples("feed")
    trainer = OnlineTrainer(
        topics,
        FileRegistry(tmp_path / "registry"),
        TrainerConfig(
            definition=FEED.with_spec(spec).with_learner(learner),
            batch_size=trainer_batch,
            metrics_window=500,
        ),
        clock=lambda: 0.0,
    )
    records = [Record(topic, 0, i, None, e) for i, e in enumerate(exs)]
    for s in range(0, N, 300):  # the runtime hands over records in its own batches
        trainer.process(records[s : s + 300])
    trainer.finish()
    rows = [
        {"ts": e.ts, "label": e.label, "features": json.dumps(e.features, sort_keys=True)}
        for e in exs
    ]
    data = tmp_path / "replay.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    summary = progressive_validation(EvalConfig(data=data, model=learner, hash_bits=14, window=500))
    assert FeatureSpec.from_dict(summary["feature_spec"]) == spec  # the same features
    report = trainer.metrics.report()
    assert report["count"] == summary["examples"] == N
    for key in ("auc", "logloss", "calibration", "window_auc", "window_logloss"):
        assert report[key] == pytest.approx(summary[key], rel=1e-9, abs=1e-12), key
    assert summary["logloss"] < summary["constant_logloss"]
