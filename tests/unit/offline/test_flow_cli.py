"""``streamlearn flow`` on a user's flows module; grids; the sweep report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamlearn.cli import root as cli
from streamlearn.cli.options import parse_grid, parse_params
from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow.catalog import discover, get_flow
from streamlearn.offline.flow.grid import expand_grid
from streamlearn.offline.flow.report import write_results
from streamlearn.offline.flow.sweep import SweepJob, run_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

USER_FLOWS = """
from pathlib import Path
from streamlearn.offline.flow import Flow

toy = Flow("toy", params={"n": 3, "scale": 1.0}, description="Sums and scales.",
           metrics=lambda out: {"score": out.get("scale")}, headline=("score",))

@toy.step()
def numbers(n: int) -> list[int]:
    return list(range(n))

@toy.step(inputs=["numbers"])
def scale(numbers: list[int], scale: float, fail_file: str = "") -> float:
    if fail_file and Path(fail_file).exists():
        raise RuntimeError("expected no " + fail_file + ", found one")
    return sum(numbers) * scale
"""


@pytest.fixture
def user_module(tmp_path: Path) -> str:
    path = tmp_path / "my_flows.py"
    path.write_text(USER_FLOWS)
    return str(path)


def app() -> typer.Typer:
    return cli.app  # the real CLI: its error edge, its lazy commands


def test_grid_expansion_and_bounds() -> None:
    grid = parse_grid(["learner=ftrl,fm", "alpha=0.1, 0.5", "shuffle=true"])
    assert grid == {"learner": ["ftrl", "fm"], "alpha": [0.1, 0.5], "shuffle": [True]}
    configs = expand_grid(grid, max_configs=4)
    assert configs[0] == {"learner": "ftrl", "alpha": 0.1, "shuffle": True}
    assert [(c["learner"], c["alpha"]) for c in configs] == [
        ("ftrl", 0.1),
        ("ftrl", 0.5),
        ("fm", 0.1),
        ("fm", 0.5),
    ]
    assert expand_grid({}, 1) == [{}]
    with pytest.raises(FlowError, match=r"at most 3 configurations .* has 4"):
        expand_grid(grid, max_configs=3)
    with pytest.raises(typer.BadParameter, match="twice"):
        parse_grid(["a=1", "a=2"])
    with pytest.raises(typer.BadParameter, match="expected key=value, got 'oops'"):
        parse_grid(["oops"])
    assert parse_params(["topic=a,b", "end=100", "x=null"]) == {
        "topic": "a,b",
        "end": 100,
        "x": None,
    }


def test_discover_builtin_and_user_flows(user_module: str) -> None:
    assert {"retrain", "vision"} <= set(discover())
    flows = discover(user_module)
    assert list(flows) == ["retrain", "toy", "vision"]
    with pytest.raises(FlowError, match=r"among \['retrain', 'vision'\] .*got 'toy'"):
        get_flow("toy")
    with pytest.raises(FlowError, match=r"expected a Python file of flows at nope\.py"):
        discover("nope.py")


def test_cli_list_run_failure_and_single_step(user_module: str, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app(), ["flow", "list", "--module", user_module])
    assert listed.exit_code == 0, listed.output
    assert "toy: Sums and scales." in listed.output and "scale ← numbers" in listed.output

    data = tmp_path / "var"
    fail_file = tmp_path / "broken"
    fail_file.write_text("")
    base = ["flow", "run", "toy", "--data-dir", str(data), "--quiet", "-p", "n=4"]
    env = {"STREAMLEARN_FLOW_MODULE": user_module}
    failed = runner.invoke(app(), [*base, "-p", f"fail_file={fail_file}"], env=env)
    assert failed.exit_code == 2
    assert "step 'scale' of flow 'toy' failed: RuntimeError: expected no" in failed.output
    assert "--step scale" in failed.output

    fail_file.unlink()
    alone = runner.invoke(
        app(), [*base, "-p", f"fail_file={fail_file}", "--step", "scale"], env=env
    )
    assert alone.exit_code == 0, alone.output
    summary = json.loads(alone.output)
    assert summary["status"] == "succeeded" and summary["metrics"] == {"score": 6.0}
    assert {k: v["status"] for k, v in summary["steps"].items()} == {
        "numbers": "cached",
        "scale": "executed",
    }
    record = json.loads(Path(summary["lineage"]).read_text())
    assert record["params"]["n"] == 4 and record["mode"]["step"] == "scale"


def test_run_job_rows_and_report_files(user_module: str, tmp_path: Path) -> None:
    root = tmp_path / "flows"
    rows = [
        run_job(SweepJob(i, "toy", user_module, {"scale": s}, {"n": 3}, root))
        for i, s in enumerate([1.0, 2.5])
    ]
    rows.append(run_job(SweepJob(2, "toy", user_module, {"scale": None}, {"n": 3}, root)))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[1]["score"] == 7.5 and Path(rows[1]["run"]).exists()
    assert "TypeError" in rows[2]["error"]
    paths = write_results(tmp_path / "out", rows, ["scale"], ["score", "seconds"], "toy sweep")
    png = paths["png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    table = list(csv.DictReader(paths["csv"].open()))
    assert [r["status"] for r in table] == ["ok", "ok", "failed"] and table[1]["score"] == "7.5"
    md = paths["markdown"].read_text()
    assert md.startswith("# toy sweep") and "| config | scale | status | score |" in md


def test_cli_sweep_on_a_local_ray(user_module: str, tmp_path: Path) -> None:
    """Each configuration is a Ray task on a local Ray (2 CPUs) that the command starts
    and stops; the flows file is loaded again in the Ray workers."""
    import ray

    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        app(),
        ["flow", "sweep", "toy", "--module", user_module, "--data-dir", str(tmp_path / "var"),
         "-p", "scale=1,2", "--set", "n=5", "--workers", "2", "--out", str(out), "--quiet",
         "--ray-cpus", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| 1 | 2 | ok | 20 |" in result.output
    assert not ray.is_initialized()  # the local Ray is stopped again
    runs = [json.loads(p.read_text()) for p in (tmp_path / "var" / "flows").rglob("_runs/*.json")]
    assert len({r["run_id"] for r in runs}) == 2
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)
    too_many = CliRunner().invoke(
        app(),
        ["flow", "sweep", "toy", "--module", user_module, "-p", "n=1,2,3", "--max-configs", "2",
         "--out", str(out), "--data-dir", str(tmp_path / "var")],
    )  # fmt: skip
    assert too_many.exit_code == 2 and "at most 2 configurations" in too_many.output
