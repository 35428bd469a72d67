"""Loading a project directory, the built-in example, ``streamlearn init``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamlearn.cli.root import app
from streamlearn.project import ProjectError, builtin_root, is_builtin, load_project
from streamlearn.project.scaffold import init

GOOD = """
from streamlearn.project import Events, Head, Model, Project

project = Project(
    name="tiny",
    events=Events(impressions=["view"], engagements=["tap"]),
    surfaces=["home"],
    heads=[Head("tap", positives=["tap"])],
    models=[Model("home", head="tap", surfaces=["home"])],
)
"""


def _write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "project.py").write_text(text)
    return root


def test_the_builtin_example_is_the_default() -> None:
    p = load_project()
    assert p.name == "feed_ads" and is_builtin(p) and p.root == builtin_root().resolve()
    assert p.model_catalog.names == ("feed", "ads")


def test_a_directory_or_its_module_loads_once_per_version(tmp_path: Path) -> None:
    root = _write(tmp_path / "tiny", GOOD)
    p = load_project(root)
    assert p.name == "tiny" and p.root == root.resolve() and not is_builtin(p)
    assert load_project(root / "project.py") is p  # cached while unchanged
    (root / "project.py").write_text(GOOD.replace('"tiny"', '"tiny2"'))
    assert load_project(root).name == "tiny2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = 1\n", r"expected a module-level `project = Project\(...\)`, got nothing"),
        ("project = 3\n", r"expected a module-level `project = Project\(...\)`, got int"),
        ("def broken(:\n", r"project\.py:1: "),
        ("import nothing_of_the_sort\n", r"project\.py:1: ModuleNotFoundError"),
        (
            GOOD.replace('engagements=["tap"]', 'engagements=["tap"], others=["tap"]'),
            r"project\.py:4: project 'tiny': event type 'tap': declared in both",
        ),
    ],
)
def test_what_is_wrong_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    root = _write(tmp_path / "p", text)
    with pytest.raises(ProjectError, match=message) as err:
        load_project(root)
    assert "\n" not in str(err.value)


def test_no_project_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"streamlearn init .*nowhere"):
        load_project(tmp_path / "nowhere")


def test_init_writes_a_project_that_loads_and_a_log_of_its_events(tmp_path: Path) -> None:
    files = init(tmp_path / "shop", requests=200)
    assert [f.name for f in files] == ["project.py", "events.csv"]
    p = load_project(tmp_path / "shop")
    with open(tmp_path / "shop" / "events.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["type"] for r in rows} <= p.schema.types
    assert sum(r["type"] in p.schema.impressions for r in rows) == 200 * 5
    assert any(r["type"] in p.schema.engagements for r in rows)
    assert [float(r["ts"]) for r in rows] == sorted(float(r["ts"]) for r in rows)
    with pytest.raises(ProjectError, match="already holds a project"):
        init(tmp_path / "shop")


def test_every_command_takes_the_project(tmp_path: Path) -> None:
    root = _write(tmp_path / "tiny", GOOD)
    run = CliRunner().invoke(app, ["models", "defs", "--project", str(root)])
    assert run.exit_code == 0 and '"name": "home"' in run.output
    run = CliRunner().invoke(
        app, ["features", "list", "--json"], env={"STREAMLEARN_PROJECT": str(root)}
    )
    assert run.exit_code == 0 and '"features": []' in run.output
    bad = _write(tmp_path / "bad", GOOD.replace('head="tap"', 'head="click"'))
    run = CliRunner().invoke(app, ["models", "defs", "--project", str(bad)])
    assert run.exit_code == 2
    assert "error:" in run.output and "model 'home': expected a head among ['tap']" in run.output
