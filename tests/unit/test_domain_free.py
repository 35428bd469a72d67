"""The platform holds no domain words: outside the example projects and the simulator,
its code names no event type, surface, feature or model of the built-in example.

Every event type, surface, feature and model comes from a project
(``streamlearn.project``); this test reads the platform's modules token by token:

* a name (``FEED``, ``click``) or a string literal that is one of the example's names
  (``"impression"``, ``"user_ctr"``) is code that knows the example;
* prose (docstrings, comments, messages) may not name its surfaces, models, features or
  the event types that are not also plain English or the platform's own roles
  (``click``, ``conversion``), nor quote any of its names (```like```, ``'hide'``).
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from tests.example import PROJECT

ROOT = Path(__file__).resolve().parents[2]
#: The platform's code (the links under streamlearn/ are not followed).
TREES = ("streams", "models", "serving", "offline", "streamlearn")
#: The simulator drives the example project only, and says so.
EXEMPT = ("streamlearn/simulator/", "streamlearn/cli/commands/simulate.py")

TYPES = set(PROJECT.schema.types)
NAMES = (
    TYPES
    | set(PROJECT.schema.surfaces)
    | {f.name for f in PROJECT.catalog}
    | set(PROJECT.model_catalog.names)
)
#: Event types that are also plain English or the platform's roles, fine in prose.
ENGLISH = {"impression", "like", "share", "hide"}
PROSE = (NAMES - ENGLISH) | {w + "s" for w in TYPES - ENGLISH}
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUOTED = re.compile(r"[`'\"]+([A-Za-z_][A-Za-z0-9_]*)[`'\"]+")


def _modules() -> list[Path]:
    out = []
    for tree in TREES:
        for p in sorted((ROOT / tree).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if not rel.startswith(EXEMPT):
                out.append(p)
    return out


def _findings(path: Path) -> list[str]:
    found = []
    rel = path.relative_to(ROOT).as_posix()
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        where = f"{rel}:{tok.start[0]}"
        if tok.type == tokenize.NAME and tok.string.lower() in NAMES:
            found.append(f"{where}: name {tok.string}")
        elif tok.type in (tokenize.STRING, tokenize.COMMENT):
            text = tok.string
            literal = text.strip("rbfuRBFU").strip("\"'")
            if tok.type == tokenize.STRING and literal in NAMES:
                found.append(f"{where}: literal {text}")
                continue
            for word in WORD.findall(text):
                if word in PROSE:
                    found.append(f"{where}: prose {word!r}")
            for word in QUOTED.findall(text):
                if word in NAMES:
                    found.append(f"{where}: quoted {word!r}")
    return found


def test_the_words_are_the_examples() -> None:
    """The list is not empty: the example declares what this test looks for."""
    assert {"feed", "ads", "click", "impression", "user_ctr"} <= NAMES


def test_the_platform_names_nothing_of_the_example() -> None:
    found = [f for path in _modules() for f in _findings(path)]
    assert found == [], "domain words in the platform:\n" + "\n".join(found)


def test_the_scan_finds_a_domain_word(tmp_path: Path) -> None:
    """The scan is not blind: it finds each kind of finding in a module that has them."""
    probe = ROOT / "streams" / "_probe_domain_words.py"
    probe.write_text(
        '"""Ranks the feed."""\nFEED = "feed"  # the ``like`` type\nWINDOW = "user_ctr"\n'
    )
    try:
        found = _findings(probe)
    finally:
        probe.unlink()
    kinds = {f.split(": ")[1].split(" ")[0] for f in found}
    assert kinds == {"name", "literal", "prose", "quoted"}, found
