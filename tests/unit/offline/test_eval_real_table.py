"""``streamlearn eval --data T --label L`` with no other flag, on a real table.

UCI Adult (48,842 rows in their given order; ``tests/data``): unscaled numbers (a weight
up to 1.5M, gains up to 99,999), eight categorical columns, a text label. Every learner
at its defaults, and again at ``--batch-size 1000``, must do better than the constant
predictor, and the best must hold against baselines run here on the same rows: Vowpal
Wabbit (plain and ``--ftrl``, one pass, on our hashed features) and river as a river user
runs it (``StandardScaler`` on numbers, ``OneHotEncoder`` on strings, into
``LogisticRegression`` with AdaGrad, the best river learner on this table; see
``bench/bench_learners.py``). About 20 s on two cores.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from streamlearn.cli import root as cli
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import create
from streamlearn.offline import tables
from streamlearn.offline.prequential import EvalConfig, prepare

ADULT = Path(__file__).parents[2] / "data" / "adult.parquet"


def run_eval(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"summary{'-'.join(extra)}.json"
    args = ["eval", "--data", str(ADULT), "--label", "income", "--quiet"]
    result = CliRunner().invoke(cli.app, [*args, *extra, "--summary-json", str(out)])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def vw_best_auc(tmp_path: Path) -> float:
    from vowpalwabbit import pyvw

    prepared = prepare(EvalConfig(data=ADULT, label="income"))
    featuriser = create("ftrl", prepared.spec).featuriser
    idx, val = featuriser.transform_columns(
        prepared.table.num_rows, *tables.feature_columns(prepared.table, prepared.spec)
    )
    data = tmp_path / "adult.vw"
    with open(data, "w") as fh:
        for r_idx, r_val, label in zip(
            idx[:, 1:].tolist(), val[:, 1:].tolist(), prepared.y.tolist(), strict=True
        ):
            feats = " ".join(f"{i}:{v:.7g}" for i, v in zip(r_idx, r_val, strict=True) if v)
            fh.write(f"{1 if label > 0 else -1} |f {feats}\n")
    aucs = []
    for extra in ("", "--ftrl"):
        preds = tmp_path / "preds.txt"
        vw = pyvw.Workspace(
            f"--data {data} -b {prepared.spec.hash_bits} --loss_function logistic "
            f"--link logistic -p {preds} --quiet --no_stdin {extra}"
        )
        vw.finish()
        auc = exact_auc(prepared.y, np.loadtxt(preds, usecols=0))
        assert auc is not None
        aucs.append(auc)
    return max(aucs)


def river_pipeline_auc() -> float:
    from river import compose, linear_model, optim, preprocessing

    prepared = prepare(EvalConfig(data=ADULT, label="income"))
    model = (
        (compose.SelectType(numbers.Number) | preprocessing.StandardScaler())
        + (compose.SelectType(str) | preprocessing.OneHotEncoder(drop_zeros=True))
    ) | linear_model.LogisticRegression(optim.AdaGrad())
    rows = prepared.table.to_pylist()
    p = np.empty(len(rows))
    for r, (row, label) in enumerate(zip(rows, prepared.y.tolist(), strict=True)):
        x = {k: v for k, v in row.items() if v is not None}
        p[r] = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, label > 0)
    auc = exact_auc(prepared.y, p)
    assert auc is not None
    return auc


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_eval_without_flags_on_adult(tmp_path: Path) -> None:
    summary = run_eval(tmp_path)
    assert summary["label"] == "income" and summary["positive_label"] == ">50K"
    assert summary["examples"] == 48_842 and summary["batch_size"] == 1024
    constant = summary["constant_logloss"]
    learners = summary["learners"]
    assert set(learners) == {"ftrl", "fm", "deep"}
    for name, s in learners.items():
        assert s["logloss"] < constant, f"{name}: log loss {s['logloss']:.4f} ≥ {constant:.4f}"

    at_1000 = run_eval(tmp_path, "--batch-size", "1000")
    for name, s in at_1000["learners"].items():
        assert s["logloss"] < constant, f"{name} at batch 1000: {s['logloss']:.4f} ≥ {constant:.4f}"
    for name in ("ftrl", "fm", "deep"):  # the batch only chunks the work
        assert at_1000["learners"][name]["auc"] == pytest.approx(learners[name]["auc"], abs=1e-6)

    best = learners[summary["best"]]["auc"]
    vw = vw_best_auc(tmp_path)
    river = river_pipeline_auc()
    assert best >= vw - 0.002, f"best AUC {best:.4f}, Vowpal Wabbit {vw:.4f}"
    assert best >= river + 0.01, f"best AUC {best:.4f}, river pipeline {river:.4f}"
