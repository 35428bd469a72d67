"""The ``eval`` engine and command on small generated files."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from streamlearn.cli import root as cli
from streamlearn.models.errors import ModelError
from streamlearn.offline.errors import DatasetError
from streamlearn.offline.prequential import (
    EvalConfig,
    EvalError,
    compare_learners,
    progressive_validation,
)
from streamlearn.offline.tables import expand_features


def make_table(n: int = 3000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 10, n)
    position = rng.integers(0, 5, n)
    logit = -1.5 + np.where(item < 3, 1.5, -0.5) - 0.3 * position
    clicked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table(
        {
            "user": [f"u{u}" for u in rng.integers(0, 30, n)],
            "item": [f"i{i}" for i in item],
            "position": position,
            "ts": rng.permutation(n).astype(np.float64),
            "clicked": clicked,
        }
    )


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


def config(path: Path, **kw: object) -> EvalConfig:
    return EvalConfig(data=path, label="clicked", hash_bits=14, batch_size=100, **kw)  # type: ignore[arg-type]


def test_formats_agree_and_the_model_learns(tmp_path: Path) -> None:
    table = make_table()
    summaries = [
        progressive_validation(config(write(table, tmp_path / f"d.{ext}"), time_column="ts"))
        for ext in ("parquet", "csv", "jsonl")
    ]
    first = summaries[0]
    assert first["examples"] == 3000
    assert first["auc"] > 0.7
    # an integer column with few distinct values is numeric and categorical
    assert first["feature_spec"]["categorical"] == ["user", "item", "position"]
    assert first["feature_spec"]["numeric"] == ["position"]
    for key in ("examples_per_s", "logloss", "ne"):
        assert first[key] is not None and first[key] > 0
    for other in summaries[1:]:
        assert other["auc"] == pytest.approx(first["auc"], abs=1e-12)
        assert other["logloss"] == pytest.approx(first["logloss"], abs=1e-12)


def test_time_column_orders_rows(tmp_path: Path) -> None:
    table = make_table()
    ordered = table.sort_by("ts")
    by_time = progressive_validation(
        config(write(table, tmp_path / "shuffled.parquet"), time_column="ts")
    )
    presorted = progressive_validation(
        config(write(ordered, tmp_path / "sorted.parquet"), features=("user", "item", "position"))
    )
    unordered = progressive_validation(
        config(tmp_path / "shuffled.parquet", features=("user", "item", "position"))
    )
    assert by_time["logloss"] == pytest.approx(presorted["logloss"], abs=1e-12)
    assert by_time["logloss"] != pytest.approx(unordered["logloss"], abs=1e-9)


def test_feature_subset_params_and_progress(tmp_path: Path) -> None:
    path = write(make_table(), tmp_path / "d.parquet")
    calls: list[tuple[int, int]] = []
    summary = progressive_validation(
        EvalConfig(
            data=path,
            label="clicked",
            features=("item",),
            model="ftrl",
            params={"alpha": 0.2},
            hash_bits=12,
            batch_size=1000,
            report_every=1000,
        ),
        progress=lambda done, total, report: calls.append((done, total)),
    )
    assert summary["feature_spec"]["categorical"] == ["item"]
    assert summary["feature_spec"]["numeric"] == []
    assert summary["params"] == {"alpha": 0.2}
    assert calls == [(1000, 3000), (2000, 3000), (3000, 3000)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": Path("missing.parquet")}, "found none"),
        ({"data": Path("d.txt")}, "must end in one of"),
        ({"label": "nope"}, r"columns \['nope'\] not found"),
        ({"features": ("user", "ghost")}, "ghost"),
        ({"time_column": "when"}, "when"),
        ({"features": ("clicked",)}, "must not include the label"),
        ({"label": "position"}, "must hold 0 or 1"),
        ({"label": "user"}, "must have two distinct values"),
        ({"label": "clicked", "positive": "yes"}, "must be a number"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_inputs_raise_clear_errors(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    write(make_table(50), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("x")
    base = {"data": tmp_path / "d.parquet", "label": "clicked"}
    if "data" in change:
        change = {"data": tmp_path / Path(str(change["data"]))}
    with pytest.raises(EvalError, match=message) as info:
        progressive_validation(EvalConfig(**{**base, **change}))  # type: ignore[arg-type]
    assert isinstance(info.value, DatasetError) and info.value.exit_code == 2


def test_corrupt_file_and_unknown_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(EvalError, match="cannot read"):
        progressive_validation(EvalConfig(data=bad, label="clicked"))
    path = write(make_table(50), tmp_path / "d.parquet")
    with pytest.raises(ModelError, match="learner must be one of"):
        progressive_validation(EvalConfig(data=path, label="clicked", model="nope"))
    with pytest.raises(ModelError, match="parameters of learner"):
        progressive_validation(EvalConfig(data=path, label="clicked", params={"alpah": 1}))


def null_labels(tmp_path: Path) -> Path:
    path = tmp_path / "nulls.jsonl"
    path.write_text('{"a": "x", "clicked": 1}\n{"a": "y", "clicked": null}\n')
    return path


def test_null_labels(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="no nulls"):
        progressive_validation(EvalConfig(data=null_labels(tmp_path), label="clicked"))


def app() -> typer.Typer:
    return cli.app  # the real CLI: its error edge, its lazy commands


def test_cli_writes_summary_and_reads_env(tmp_path: Path) -> None:
    path = write(make_table(), tmp_path / "d.csv")
    out = tmp_path / "out" / "summary.json"
    result = CliRunner().invoke(
        app(),
        [
            "eval",
            "--data",
            str(path),
            "--time-column",
            "ts",
            "--features",
            "item,position",
            "--model",
            "ftrl",
            "--param",
            "alpha=0.2",
            "--param",
            "l1=0",
            "--batch-size",
            "200",
            "--summary-json",
            str(out),
            "--quiet",
        ],
        env={"STREAMLEARN_LABEL": "clicked", "STREAMLEARN_HASH_BITS": "12"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    for key in ("examples", "auc", "logloss", "ne", "examples_per_s"):
        assert summary[key] is not None
    assert summary["examples"] == 3000
    assert summary["params"] == {"alpha": 0.2, "l1": 0}
    assert summary["batch_size"] == 200
    assert summary["feature_spec"]["hash_bits"] == 12


def test_cli_reports_bad_column_and_param(tmp_path: Path) -> None:
    path = write(make_table(50), tmp_path / "d.parquet")
    result = CliRunner().invoke(app(), ["eval", "--data", str(path), "--label", "nope", "--quiet"])
    assert result.exit_code == 2
    assert "not found" in result.output
    result = CliRunner().invoke(
        app(),
        ["eval", "--data", str(path), "--label", "clicked", "--model", "ftrl", "--param", "alpha"],
    )
    assert result.exit_code == 2
    assert "key=value" in result.output


def training_rows(n: int = 3000, seed: int = 1) -> list[dict[str, object]]:
    """Rows shaped like a replayed training-examples topic; ``ts`` has ties (whole seconds)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        item = int(rng.integers(0, 10))
        position = int(rng.integers(0, 5))
        logit = -1.5 + (1.5 if item < 3 else -0.5) - 0.3 * position
        features: dict[str, object] = {"item": f"i{item}", "position": position}
        if i % 7:
            features["user"] = f"u{rng.integers(0, 30)}"  # sometimes missing
        rows.append(
            {
                "topic": "t.training-examples.feed",
                "partition": i % 3,
                "offset": i // 3,
                "ts": float(i // 10),
                "label": int(rng.random() < 1 / (1 + np.exp(-logit))),
                "features": json.dumps(features, sort_keys=True),
                "user_id": f"u{i % 30}",
                "served_score": 0.5,
            }
        )
    return rows


def test_training_rows_expand_features_with_label_and_ts_defaults(tmp_path: Path) -> None:
    rows = training_rows()
    table = pa.Table.from_pylist(rows)
    rng = np.random.default_rng(0)
    shuffled = table.take(rng.permutation(len(rows)))
    a = progressive_validation(EvalConfig(data=write(table, tmp_path / "a.parquet"), hash_bits=14))
    b = progressive_validation(
        EvalConfig(data=write(shuffled, tmp_path / "b.parquet"), hash_bits=14)
    )
    assert a["examples"] == 3000 and a["auc"] > 0.7
    assert (a["label"], a["time_column"]) == ("label", "ts")
    # only the keys of ``features`` are features by default: strings categorical, numbers numeric
    assert a["feature_spec"]["categorical"] == ["item", "user"]
    assert a["feature_spec"]["numeric"] == ["position"]
    # ts ties broken by topic/partition/offset: any file order gives the same stream
    assert b["logloss"] == a["logloss"] and b["auc"] == a["auc"]
    # a JSONL file with ``features`` as nested objects reads the same
    nested = [{**r, "features": json.loads(str(r["features"]))} for r in rows]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in nested))
    c = progressive_validation(EvalConfig(data=jsonl, hash_bits=14))
    assert c["feature_spec"] == a["feature_spec"]
    assert c["logloss"] == pytest.approx(a["logloss"], abs=1e-12)
    # --features still chooses, among the keys and the other columns
    sub = progressive_validation(
        EvalConfig(data=tmp_path / "a.parquet", features=("item", "user_id"))
    )
    assert sub["feature_spec"]["categorical"] == ["item", "user_id"]


def test_expand_features_types_missing_and_clashes() -> None:
    table = pa.table(
        {
            "label": [1, 0, 1],
            "features": ['{"a": 1, "b": "x"}', '{"a": 2.5, "b": 3}', '{"c": true}'],
            "a": ["top", "level", "loses"],
        }
    )
    out, keys = expand_features(table)
    assert keys == ["a", "b", "c"]
    assert out.column_names == ["label", "a", "b", "c"]
    assert out["a"].type == pa.float64() and out["a"].to_pylist() == [1.0, 2.5, None]
    assert out["b"].to_pylist() == ["x", "3", None]  # mixed: categorical
    assert out["c"].to_pylist() == [None, None, "True"]  # booleans are categorical
    with pytest.raises(DatasetError, match=r"feature keys \['a'\] clash"):
        expand_features(table, reserved=["a"])
    for plain in (pa.table({"features": ["x", "y"]}), pa.table({"features": ["[1]", "2"]})):
        assert expand_features(plain) == (plain, [])  # not JSON objects: an ordinary column


def test_missing_default_label_says_pass_label(tmp_path: Path) -> None:
    path = write(make_table(50), tmp_path / "d.parquet")
    with pytest.raises(EvalError, match=r"\['label'\] not found .*\(pass --label\)"):
        progressive_validation(EvalConfig(data=path))


def test_cli_needs_exactly_one_of_data_and_topic(tmp_path: Path) -> None:
    path = write(make_table(50), tmp_path / "d.parquet")
    cases = (
        ([], "exactly one of --data FILE or --topic TOPIC"),
        (["--data", str(path), "--topic", "t.x"], "exactly one of --data FILE or --topic TOPIC"),
        (["--data", str(path), "--from", "0"], "--from/--to apply to --topic"),
        (["--topic", "t.x"], "no broker: pass --bootstrap-servers"),
    )
    for extra, message in cases:
        result = CliRunner().invoke(
            app(),
            ["eval", "--label", "clicked", "--quiet", *extra],
            env={"STREAMLEARN_BOOTSTRAP_SERVERS": None, "COLUMNS": "200"},
        )
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_text_labels_map_automatically_and_on_request(tmp_path: Path) -> None:
    table = make_table()
    text = pa.array(np.where(table["clicked"].to_numpy(), ">50K", "<=50K"))
    path = write(table.append_column("income", text).drop(["clicked"]), tmp_path / "t.parquet")
    auto = progressive_validation(EvalConfig(data=path, label="income", hash_bits=12))
    assert auto["positive_label"] == ">50K"  # the rarer value is 1
    assert auto["positive_rate"] == pytest.approx(float(table["clicked"].to_numpy().mean()))
    flipped = progressive_validation(
        EvalConfig(data=path, label="income", positive="<=50K", hash_bits=12)
    )
    assert flipped["positive_rate"] == pytest.approx(1 - auto["positive_rate"])
    yes_no = pa.array(np.where(table["clicked"].to_numpy(), "No", "Yes"))  # by meaning
    path = write(table.append_column("y", yes_no).drop(["clicked"]), tmp_path / "yn.parquet")
    assert (
        progressive_validation(EvalConfig(data=path, label="y", hash_bits=12))["positive_label"]
        == "Yes"
    )


def test_id_columns_are_left_out_and_compare_marks_the_best(tmp_path: Path) -> None:
    table = make_table(2000)
    table = table.append_column("row_id", pa.array(np.arange(2000) * 7))
    path = write(table, tmp_path / "d.parquet")
    summary = compare_learners(EvalConfig(data=path, label="clicked", hash_bits=12), ("ftrl", "fm"))
    assert summary["dropped_id_columns"] == ["row_id"]
    assert "row_id" not in summary["feature_spec"]["numeric"]
    assert set(summary["learners"]) == {"ftrl", "fm"}
    aucs = {m: s["auc"] for m, s in summary["learners"].items()}
    assert summary["best"] == max(aucs, key=aucs.__getitem__)
    for s in summary["learners"].values():
        assert s["logloss"] < s["constant_logloss"]


def test_cli_without_model_prints_the_comparison(tmp_path: Path) -> None:
    path = write(make_table(600), tmp_path / "d.parquet")
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(
        app(),
        ["eval", "--data", str(path), "--label", "clicked", "--quiet", "--summary-json", str(out)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert set(summary["learners"]) == {"ftrl", "fm", "deep"}
    assert f"{summary['best']} (best)" in result.output
    result = CliRunner().invoke(
        app(), ["eval", "--data", str(path), "--label", "clicked", "--param", "alpha=1"]
    )
    assert result.exit_code == 2 and "pass --model" in result.output


def test_a_model_definition_is_evaluated_as_the_trainer_builds_it(tmp_path: Path) -> None:
    """``eval --definition ads``: the definition's spec and its downsampled head."""
    from streamlearn.models.definition import ModelDef
    from streamlearn.models.features import FeatureSpec
    from tests.example import CLICK

    spec = FeatureSpec(categorical=("item", "user"), hash_bits=12)
    ads = ModelDef("ads", CLICK, spec, "ftrl", {"alpha": 0.1})
    data = write(pa.Table.from_pylist(training_rows()), tmp_path / "a.parquet")
    s = progressive_validation(EvalConfig(data=data, model="ftrl", definition=ads))
    assert s["definition"] == "ads" and s["feature_spec"] == spec.to_dict()
    assert s["auc"] > 0.7 and s["calibration"] == pytest.approx(1.0, abs=0.2)
    runner = CliRunner()
    out = tmp_path / "s.json"
    args = ["eval", "--data", str(data), "--definition", "ads", "--quiet"]
    res = runner.invoke(app(), [*args, "--summary-json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["definition"] == "ads"
    res = runner.invoke(app(), ["eval", "--data", str(data), "--definition", "nope"])
    assert res.exit_code != 0 and "among ['feed', 'ads']" in res.output
