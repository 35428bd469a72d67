"""ARCHITECTURE.md lists every module of every package, file by file, and nothing else.

Each package has a section (``## models/ — …``, ``## streamlearn/simulator/ — …``) naming
its modules by their path inside that folder in backticks (`` `errors.py` ``,
`` `learners/fm.py` ``). A module belongs to the section of the deepest folder that holds
it; a heading may name two folders (``## streamlearn/cli/ and streamlearn/stack/ — …``),
whose modules are then listed with the second-level folder (`` `cli/root.py` ``). This
keeps the map true when a module is added, moved or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "ARCHITECTURE.md").read_text()
#: The real folders of the platform's code (``streamlearn/streams`` and the like are links).
TREES = ("models", "streams", "serving", "offline", "streamlearn")
HEADING = re.compile(r"^## ((?:[\w]+/)+)(?: and ((?:[\w]+/)+))? — ", re.M)


def sections() -> dict[str, str]:
    """Folder (as written, e.g. ``streamlearn/cli/``) → its section's text."""
    out: dict[str, str] = {}
    for m in HEADING.finditer(TEXT):
        end = TEXT.find("\n## ", m.end())
        body = TEXT[m.start() : end if end >= 0 else len(TEXT)]
        folders = [f for f in m.groups() if f]
        if len(folders) == 2:  # listed relative to their common parent
            parent = str(Path(folders[0]).parent) + "/"
            out[parent] = body
        else:
            out[folders[0]] = body
    return out


def modules() -> dict[str, set[str]]:
    """Section folder → the modules under it (not under a deeper section's folder)."""
    secs = sorted(sections(), key=len, reverse=True)
    found: dict[str, set[str]] = {s: set() for s in secs}
    for tree in TREES:
        for p in (ROOT / tree).rglob("*.py"):
            rel = p.relative_to(ROOT).as_posix()
            if any(part.is_symlink() for part in [p, *p.parents] if ROOT in part.parents):
                continue
            if p.name.startswith("__") and p.name.endswith("__.py"):
                continue
            owner = next((s for s in secs if rel.startswith(s)), None)
            assert owner, f"{rel} is in no section of ARCHITECTURE.md"
            found[owner].add(rel[len(owner) :])
    return found


SECTIONS = sections()


def test_every_platform_folder_has_a_section() -> None:
    assert {"models/", "streams/", "serving/", "offline/", "streamlearn/simulator/"} <= set(
        SECTIONS
    )


@pytest.mark.parametrize("folder", sorted(SECTIONS))
def test_every_module_is_listed_in_its_section(folder: str) -> None:
    listed = {
        t for t in re.findall(r"`([\w/]+\.py)`", SECTIONS[folder]) if not t.startswith("tests/")
    }
    have = modules()[folder]
    assert sorted(have - listed) == [], f"{folder} modules missing"
    assert sorted(listed - have) == [], f"{folder} lists modules that do not exist"
