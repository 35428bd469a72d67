"""Loading a project: a directory whose definitions module (``project.py``) is plain
Python that declares ``project = Project(...)``, the way a feature repository or a
dataflow file is plain Python that its tool loads.

:func:`load_project` runs the module (from its file, under a name of its own, so two
projects never share module state) and returns its checked
:class:`~streamlearn.project.declaration.Project`. Without a path it loads the built-in
example project (:data:`BUILTIN`), shipped with the package. Every failure is one
:class:`~streamlearn.project.errors.ProjectError` line naming the file (and line) and
what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import sys
import traceback
from importlib import resources
from pathlib import Path
from typing import Final

from streamlearn.models.errors import StreamlearnError
from streamlearn.project.declaration import Project
from streamlearn.project.errors import ProjectError

#: The definitions module of a project directory.
DEFINITIONS: Final = "project.py"
#: The built-in example project's folder inside the package (``streamlearn.examples``).
BUILTIN: Final = "feed_ads"

_CACHE: dict[tuple[str, int, int], Project] = {}


def builtin_root(name: str = BUILTIN) -> Path:
    """The folder of a built-in example project."""
    root = Path(str(resources.files("streamlearn.examples") / name))
    if not (root / DEFINITIONS).is_file():
        raise ProjectError(f"no built-in example project {name!r} (looked in {root})")
    return root


def is_builtin(project: Project) -> bool:
    """Whether ``project`` is the built-in example (what the simulator drives)."""
    return project.root is not None and project.root.resolve() == builtin_root().resolve()


def definitions_file(path: str | Path) -> Path:
    """The definitions module of ``path`` (a project directory or the module itself)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DEFINITIONS
    if not p.is_file():
        raise ProjectError(
            f"no project at {path}: expected a directory with {DEFINITIONS} "
            f"(create one with `streamlearn init {path}`)"
        )
    return p.resolve()


def load_project(path: str | Path | None = None) -> Project:
    """The project at ``path`` (a directory, or its ``project.py``); ``None``: the
    built-in example. Loaded once per file and modification time."""
    file = definitions_file(builtin_root() if path is None else path)
    stat = file.stat()
    key = (str(file), stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _CACHE[key] = _run(file)
    return cached


def _run(file: Path) -> Project:
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:12]
    name = f"streamlearn_project_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ProjectError(f"{file}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ProjectError(f"{file}:{exc.lineno}: {exc.msg}") from None
    except ProjectError as exc:
        raise ProjectError(f"{file}{_line(exc, file)}: {exc}") from None
    except StreamlearnError as exc:
        raise ProjectError(f"{file}{_line(exc, file)}: {exc}") from None
    except Exception as exc:  # the user's code raised: say where, in one line
        raise ProjectError(f"{file}{_line(exc, file)}: {type(exc).__name__}: {exc}") from None
    project = getattr(module, "project", None)
    if not isinstance(project, Project):
        got = "nothing" if project is None else type(project).__name__
        raise ProjectError(f"{file}: expected a module-level `project = Project(...)`, got {got}")
    return dataclasses.replace(project, root=file.parent)


def _line(exc: BaseException, file: Path) -> str:
    """``:<line>`` of the deepest frame of ``exc`` in ``file``, or ""."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
    return f":{frames[-1].lineno}" if frames else ""
