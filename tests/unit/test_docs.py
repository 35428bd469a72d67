"""The documentation site's generated reference (``docs/hooks/generate.py``): it covers
every command, route, metric and contract there is, so a new one shows up on the site
without anyone writing it down. ``.ci/run`` builds the whole site with ``--strict``."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from streamlearn.cli.root import COMMANDS
from streamlearn.streams.schemas import CONTRACTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "hooks" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_has_every_command_and_option(generate: ModuleType) -> None:
    text = generate.cli_reference()
    for name in COMMANDS:
        assert f"## `streamlearn {name}`" in text, name
    for sub in ("models promote", "features export", "flow sweep", "offline vision"):
        assert f"#### `streamlearn {sub}`" in text, sub
    up = text.split("### `streamlearn up`", 1)[1].split("\n### ", 1)[0]
    assert "| `--serving-port` | int | " in up and "`STREAMLEARN_SERVING_PORT`" in up
    assert "| `--positives-at-once`, `--positives-at-close` | flag |" in up
    assert "`--positives-at-once` |" in up  # the default of a flag pair


def test_the_http_reference_is_the_served_openapi_document(generate: ModuleType) -> None:
    doc = generate.openapi_document()
    text = generate.http_reference()
    routes = [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops]
    assert ("POST", "/v1/models/{model}:predict") in routes
    assert ("GET", "/v1/features/{entity}/{id}") in routes  # the feature routes are served
    for method, path in routes:
        assert f"#### `{method} {path}`" in text, (method, path)
    for name in doc["components"]["schemas"]:
        assert f"#### {name}\n" in text, name
    # every link to a body lands on its heading
    for target in set(re.findall(r"\]\(#([a-z0-9]+)\)", text)):
        assert target in {n.lower() for n in doc["components"]["schemas"]}, target


def test_the_metrics_reference_has_every_metric(generate: ModuleType) -> None:
    text = generate.metrics_reference()
    from prometheus_client import REGISTRY

    names = {
        c._name
        for c in REGISTRY._collector_to_names
        if getattr(c, "_name", "").startswith("streamlearn_")
    }
    assert {
        "streamlearn_predictions",
        "streamlearn_examples_trained",
        "streamlearn_dlq_events",
    } <= names
    assert names <= set(re.findall(r"`(streamlearn_[a-z0-9_]+?)(?:_total|_bucket)?`", text))
    assert "| `streamlearn_predictions_total` | counter | `model` |" in text


def test_a_metric_of_an_unplaced_module_fails_the_build(generate: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="PROCESSES"):
        generate._process("streamlearn.offline.replay")


def test_the_contracts_reference_is_what_contracts_export_writes(generate: ModuleType) -> None:
    schemas = generate.contract_schemas()
    assert set(schemas) == {f"{c.name}.schema.json" for c in CONTRACTS}
    text = generate.contracts_reference()
    for c in CONTRACTS:
        assert f"### {c.name}\n" in text and f"(schemas/{c.name}.schema.json)" in text


def test_an_unknown_placeholder_fails_the_build(generate: ModuleType) -> None:
    class Page:
        class file:
            src_uri = "x.md"

    with pytest.raises(ValueError, match="no generated part named 'nope'"):
        generate.on_page_markdown("a\n<!-- generated: nope -->\n", Page, None, None)


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))

    def walk(items: list) -> list[str]:
        out: list[str] = []
        for item in items:
            for value in item.values() if isinstance(item, dict) else [item]:
                out += walk(value) if isinstance(value, list) else [value]
        return out

    nav = walk(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"
    assert not set(nav) - pages, f"nav entries without a page: {sorted(set(nav) - pages)}"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


#: The README's two set-up commands, as a new user runs them: the first installs and runs
#: the loop, the second runs the tests (``.ci/run`` runs it as it is).
INSTALL_AND_RUN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
    "streamlearn up --duration 120 --summary-json s.json"
)
RUN_THE_TESTS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[dev]' && "
    "pytest -q -p no:cacheprovider"
)


def test_the_readme_is_a_short_front_page_into_the_docs() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert f"```bash\n{INSTALL_AND_RUN}\n```" in text
    assert f"```bash\n{RUN_THE_TESTS}\n```" in text
    assert RUN_THE_TESTS in (ROOT / ".ci" / "run").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert [link for link in local if not (ROOT / link).exists()] == []
    # it leads into every part of the site
    for part in ("tutorial/", "how-to/", "reference/", "explanation/", "benchmarks.md"):
        assert any(link.startswith(f"docs/{part}") for link in local), part
