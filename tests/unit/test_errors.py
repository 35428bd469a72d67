"""The exception tree: drawn once (``streamlearn.models.errors``' docstring), true to the classes,
and mapped by both edges with one lookup."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import streamlearn.models.errors
import streamlearn.offline.errors
import streamlearn.serving.errors
import streamlearn.streams.errors
from streamlearn.cli.ui import ErrorMapping
from streamlearn.models.errors import StreamlearnError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "streams", "serving", "offline", "simulator", "streamlearn")
_LINE = re.compile(r"^[│├└─\s]*(?P<name>\w+)\s+(?P<status>\d{3})\s+(?P<exit>\d)\s")


def drawn() -> dict[str, tuple[str | None, int, int]]:
    """``name → (parent, status, exit_code)`` as the docstring draws it."""
    out: dict[str, tuple[str | None, int, int]] = {}
    stack: list[tuple[int, str]] = []
    for line in (streamlearn.models.errors.__doc__ or "").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        depth = m.start("name")
        while stack and stack[-1][0] >= depth:
            stack.pop()
        out[m["name"]] = (stack[-1][1] if stack else None, int(m["status"]), int(m["exit"]))
        stack.append((depth, m["name"]))
    return out


def classes() -> dict[str, tuple[str | None, int, int]]:
    """The same, from the classes themselves."""
    out: dict[str, tuple[str | None, int, int]] = {}
    todo: list[type[StreamlearnError]] = [StreamlearnError]
    while todo:
        cls = todo.pop()
        parents = [b.__name__ for b in cls.__bases__ if issubclass(b, StreamlearnError)]
        assert len(parents) <= 1, f"{cls.__name__} has several parents in the tree: {parents}"
        out[cls.__name__] = (parents[0] if parents else None, cls.status, cls.exit_code)
        todo += cls.__subclasses__()
    return out


def test_the_docstring_draws_every_class_with_its_status_and_exit_code() -> None:
    assert {
        streamlearn.models.errors,
        streamlearn.streams.errors,
        streamlearn.serving.errors,
        streamlearn.offline.errors,
    }  # all imported
    assert drawn() == classes()


def test_errors_are_declared_in_errors_modules_only() -> None:
    """A class deriving from a tree class outside a package's ``errors.py`` would be missing
    from the drawing (it is only found when its module is imported)."""
    names = set(classes())
    stray = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {
                        b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                        for b in node.bases
                    }
                    if bases & names:
                        stray.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert stray == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (streamlearn.offline.errors.DatasetError("no such dataset x"), 2),
        (streamlearn.streams.errors.KafkaError("produce failed"), 1),
        (streamlearn.models.errors.StageError("nothing to roll back"), 2),
    ],
)
def test_the_cli_edge_prints_one_line_and_the_class_exit_code(
    error: StreamlearnError, code: int
) -> None:
    app = typer.Typer(cls=ErrorMapping)

    @app.command()
    def boom() -> None:
        raise error

    @app.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(app, ["boom"], env={"COLUMNS": "40"})
    assert result.exit_code == code == type(error).exit_code
    assert result.output == f"error: {error}\n"  # one line, never wrapped
    bug = typer.Typer(cls=ErrorMapping)

    @bug.command()
    def crash() -> None:
        raise KeyError("a bug")

    @bug.command()
    def other2() -> None:
        pass

    result = CliRunner().invoke(bug, ["crash"])
    assert isinstance(result.exception, KeyError)  # a bug stays a traceback
