"""ARCHITECTURE.md lists every module of every package, file by file, and nothing else.

Each package has a section (``## models/ — …``) naming its modules by their path inside
the package in backticks (`` `errors.py` ``, `` `learners/fm.py` ``); this keeps the map
true when a module is added, moved or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "streams", "serving", "simulator", "offline", "streamlearn")
TEXT = (ROOT / "ARCHITECTURE.md").read_text()


def section(package: str) -> str:
    m = re.search(rf"^## {package}/.*?(?=^## |\Z)", TEXT, re.M | re.S)
    assert m, f"ARCHITECTURE.md has no '## {package}/' section"
    return m.group(0)


def modules(package: str) -> set[str]:
    base = ROOT / package
    return {
        p.relative_to(base).as_posix()
        for p in base.rglob("*.py")
        if not (p.name.startswith("__") and p.name.endswith("__.py"))
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_listed_in_its_package_section(package: str) -> None:
    text = section(package)
    listed = {t for t in re.findall(r"`([\w/]+\.py)`", text) if not t.startswith("tests/")}
    assert sorted(modules(package) - listed) == [], f"{package}/ modules missing"
    assert sorted(listed - modules(package)) == [], f"{package}/ lists modules that do not exist"
