"""The distribution: the wheel's one top-level name and the files it carries, the extras
and what the core install can run without them, the version written once.

The wheel is built here from a copy of the working tree (tracked and new files, as a
release would take them); ``.ci/run`` also installs it into a clean virtual environment
and runs ``streamlearn up`` from outside the checkout.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import streamlearn
from streamlearn.cli.ui import ErrorMapping
from streamlearn.models.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The distributions the core install must not pull in.
HEAVY = {"torch", "ray", "matplotlib", "scikit-learn", "faust-streaming", "river", "pillow"}
#: The extras that are tools, not parts of the runtime (no module of the package imports
#: what they install, so ``EXTRAS`` has no entry for them).
TOOLS = {"all", "dev", "docs"}
#: Every module an extra brings.
BLOCKED = sorted({m for modules in EXTRAS.values() for m in modules})

#: Run first in a fresh interpreter: the extras' modules cannot be imported, as in a core
#: install (``importlib.util.find_spec`` raises for them too).
BLOCK = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
"""


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def _source_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    # a tracked file deleted in the working tree is not in it
    return [f for f in out.split("\0") if f and ((ROOT / f).exists() or (ROOT / f).is_symlink())]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from a copy of the working tree (a stale ``build/`` of the
    checkout cannot leak into it)."""
    src = tmp_path_factory.mktemp("src")
    for f in _source_files():
        dest = src / f
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest, follow_symlinks=False)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, src],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("streamlearn-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_the_wheel_installs_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    tops = {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" not in n}
    assert tops == {"streamlearn"}
    (top_level,) = [n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["streamlearn"]


def test_the_wheel_carries_every_file_of_the_package(wheel: zipfile.ZipFile) -> None:
    """Every file under ``streamlearn/``, through its links to the top-level folders (and
    any folder linked there later, e.g. example projects): modules and package data."""
    links = {
        p.name: p.resolve().relative_to(ROOT).as_posix()
        for p in (ROOT / "streamlearn").iterdir()
        if p.is_symlink()
    }
    assert {"streams", "models", "serving", "offline"} <= set(links)
    expected: set[str] = set()
    for f in _source_files():
        for name, target in links.items():
            if f.startswith(target + "/"):
                expected.add(f"streamlearn/{name}/{f[len(target) + 1 :]}")
        if f.startswith("streamlearn/") and f.split("/")[1] not in links:
            expected.add(f)
    expected = {f for f in expected if "__pycache__" not in f}
    missing = sorted(expected - set(wheel.namelist()))
    assert missing == [], (
        "files missing from the wheel (a module outside a package, or package data whose "
        f"pattern is not in pyproject.toml's [tool.setuptools.package-data]): {missing}"
    )


def test_the_core_requirements_leave_out_the_heavy_frameworks(wheel: zipfile.ZipFile) -> None:
    meta = _metadata(wheel)
    assert meta["Version"] == streamlearn.__version__
    core = {_name(r) for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r}
    assert core and not core & HEAVY, sorted(core & HEAVY)
    assert set(meta.get_all("Provides-Extra") or []) == {*EXTRAS, *TOOLS}


def test_the_extras_table_matches_pyproject() -> None:
    """``streamlearn.models.extras.EXTRAS`` (the modules) and pyproject's extras (the
    distributions) say the same: each extra's distributions provide exactly its modules."""
    declared = PYPROJECT["project"]["optional-dependencies"]
    provided_by = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        dists = {_name(d) for m in modules for d in provided_by.get(m, [])}
        assert dists == {_name(r) for r in declared[extra]}, extra
    assert set(declared) == {*EXTRAS, *TOOLS}
    assert declared["all"] == [f"streamlearn[{','.join(EXTRAS)}]"]
    assert {"streamlearn[all]", "streamlearn[docs]"} <= set(declared["dev"])
    assert not {_name(r) for r in PYPROJECT["project"]["dependencies"]} & HEAVY


def test_the_version_is_written_once_and_the_changelog_names_it() -> None:
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "streamlearn.__version__"
    }
    releases = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases and releases[0] == streamlearn.__version__
    out = subprocess.run(
        [sys.executable, "-m", "streamlearn", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout == f"streamlearn {streamlearn.__version__}\n"


#: Everything ``up`` starts, and the commands of the core install (``--help`` imports
#: every command module, so all of them must import without the extras).
CORE = """
from streamlearn.cli.root import COMMANDS, load_commands
for module in sorted(set(COMMANDS.values())):
    load_commands(module)
import streamlearn.offline.prequential, streamlearn.offline.replay, streamlearn.offline.train
import streamlearn.serving.app, streamlearn.simulator, streamlearn.stack.supervisor
import streamlearn.streams.features.processor, streamlearn.streams.learning.joiner
import streamlearn.streams.learning.trainer
import numpy as np
from streamlearn.models import zoo
from streamlearn.models.metrics import ProgressiveMetrics
from streamlearn.project import load_project
FEED = load_project().model_catalog.get("feed")
rng = np.random.default_rng(0)
rows = [{"user_id": f"u{i % 7}", "item_id": f"i{i % 5}"} for i in range(400)]
y = (rng.random(400) < 0.3).astype(float)
for name in ("ftrl", "fm"):
    learner = zoo.create(name, FEED.spec)
    learner.learn_many(rows, y)
    ProgressiveMetrics(drift_chunk=10).update(y, learner.predict_proba_many(rows))
    learner.snapshot()
print("ok")
"""


#: The ``streamlearn`` command (after :data:`BLOCK`).
CLI = "import sys; from streamlearn.cli import main; sys.argv[0] = 'streamlearn'; main()"


def _run_core(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_the_core_runs_without_any_extra() -> None:
    out = _run_core(CORE)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["offline", "vision", "--dataset", "digits", "--no-publish"], "vision"),
        (["flow", "run", "vision"], "flow"),
        (["up", "--runtime", "faust", "--duration", "5"], "faust"),
        (
            ["train", "--model", "feed", "--learner", "deep", "--bootstrap-servers", "127.0.0.1:9"],
            "deep",
        ),
        (
            [
                "train",
                "--model",
                "feed",
                "--learner",
                "river-lr",
                "--bootstrap-servers",
                "127.0.0.1:9",
            ],
            "river",
        ),
        (
            ["worker", "features", "--runtime", "faust", "--bootstrap-servers", "127.0.0.1:9"],
            "faust",
        ),
    ],
)
def test_a_command_that_needs_a_missing_extra_names_it_in_one_line(
    args: list[str], extra: str, tmp_path: Path
) -> None:
    out = _run_core(CLI, *args, "--data-dir", str(tmp_path))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert lines[0].endswith(f"pip install 'streamlearn[{extra}]'")
    assert not any(tmp_path.iterdir())  # it failed before it started anything


def test_eval_compares_the_installed_learners_and_names_the_extra_of_the_others() -> None:
    data = ["--data", "tests/data/adult.parquet", "--label", "income"]
    out = _run_core(CLI, "eval", *data, "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ftrl" in out.stdout and "fm" in out.stdout and "deep" not in out.stdout
    assert "note: not compared: the 'deep' learner needs the 'deep' extra" in out.stderr


def test_an_import_of_a_missing_extra_anywhere_below_the_cli_names_it() -> None:
    app = typer.Typer(cls=ErrorMapping)

    @app.command()
    def sweep() -> None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    @app.command()
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nothing_we_know'", name="nothing_we_know")

    res = CliRunner().invoke(app, ["sweep"])
    assert res.exit_code == 1
    assert "pip install 'streamlearn[flow]'" in res.output
    res = CliRunner().invoke(app, ["broken"])
    assert isinstance(res.exception, ModuleNotFoundError)  # not ours to explain: a bug
