"""The documentation site's generated parts (an mkdocs hook, ``mkdocs.yml``'s ``hooks``).

A page asks for a generated part with a line ``<!-- generated: NAME -->``; the hook
replaces it, at build time, with what the code says now, so the reference cannot drift:

- ``cli``: every command of the typer app (:data:`streamlearn.cli.root.COMMANDS`), its
  usage, help and every argument and option with its environment variable and default;
- ``http``: the HTTP API, from the OpenAPI document serving builds from its routes and
  answers at ``GET /openapi.json`` (asked of the real application, in process);
- ``metrics``: every Prometheus metric of the package, with its type, labels, help text
  and the process that exports it;
- ``contracts``: the record contracts' JSON Schemas, as ``streamlearn contracts export``
  writes them for the built-in example project.

The OpenAPI document and the schema files are also published with the site
(``reference/openapi.json``, ``reference/schemas/*.schema.json``). A placeholder with an
unknown name, or a metric of a module :data:`PROCESSES` does not place, fails the build.
Nothing here reaches the network.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, Final

PLACEHOLDER: Final = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)

#: Module of a metric's definition → the processes that export it.
PROCESSES: Final = {
    "streamlearn.serving": "serving",
    "streamlearn.simulator": "simulator",
    "streamlearn.streams.runtime": "every stream processor (features, joiner, trainer)",
    "streamlearn.streams.kafka.dead_letters": "every process that consumes a topic",
    "streamlearn.streams.learning.joiner": "joiner",
    "streamlearn.streams.learning.trainer": "trainer",
    "streamlearn.streams.learning.rollout": "trainer",
}


def _text(text: Any) -> str:
    """Plain text (a help string, a description) as Markdown: ``<`` outside code spans
    escaped, so that ``<record>`` is not taken for an HTML tag."""
    parts = str(text).split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _cell(text: Any) -> str:
    """Text fit for one Markdown table cell."""
    return _text(" ".join(str(text).split())).replace("|", "\\|")


def _code(text: Any) -> str:
    return f"`{text}`" if text not in (None, "") else ""


# --- the command line --------------------------------------------------------------------


def _commands() -> Iterator[tuple[str, Any, Any]]:
    """``(full name, command, its context)`` of every command, groups first, depth first
    (typer's commands and groups; a group is what lists sub-commands)."""
    import typer

    from streamlearn.cli.root import app

    root = typer.main.get_command(app)

    def walk(prefix: str, group: Any, parent: Any) -> Iterator[tuple[str, Any, Any]]:
        ctx = typer.Context(group, info_name=prefix, parent=parent)
        if parent is None:
            yield prefix, group, ctx
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            full = f"{prefix} {name}"
            if hasattr(cmd, "list_commands"):
                yield full, cmd, typer.Context(cmd, info_name=full, parent=ctx)
                yield from walk(full, cmd, ctx)
            else:
                yield full, cmd, typer.Context(cmd, info_name=full, parent=ctx)

    yield from walk("streamlearn", root, None)


def _default(param: Any) -> str:
    value = param.default
    if value is None or value == () or value == [] or callable(value):
        return ""
    if param.is_flag and param.secondary_opts:
        return _code(param.opts[0] if value else param.secondary_opts[0])
    if param.is_flag:
        return ""
    return _code(getattr(value, "value", value))


def _type(param: Any, ctx: Any) -> str:
    if param.param_type_name == "option" and param.is_flag:
        return "flag"
    shown = param.display_type(ctx).strip("<>").replace(" range", "")
    bounds = [
        f"{op} {v}"
        for op, v in ((">=", getattr(param, "min", None)), ("<=", getattr(param, "max", None)))
        if v is not None
    ]
    return f"{shown} ({', '.join(bounds)})" if bounds else shown


def cli_reference() -> str:
    """Every command, as ``streamlearn COMMAND --help`` says it, in tables."""
    out: list[str] = []
    for full, cmd, ctx in _commands():
        group = hasattr(cmd, "list_commands")
        depth = full.count(" ")
        out.append(f"{'#' * min(2 + depth, 4)} `{full}`\n")
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        out.append(f"```\n{full} {usage}\n```\n")
        if cmd.help:
            out.append(_text(cmd.help.strip().replace("\b\n", "")) + "\n")
        if group and depth:
            out.append("| command | does |\n|---|---|")
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is None or sub.hidden:
                    continue
                anchor = f"{full} {name}".replace(" ", "-")
                summary = _cell(sub.get_short_help_str(limit=200))
                out.append(f"| [`{name}`](#{anchor}) | {summary} |")
            out.append("")
        rows = []
        for p in cmd.params:
            if p.hidden or p.name == "help":
                continue
            if p.param_type_name == "argument":
                flags = _code(p.metavar or p.name.upper())
            else:
                flags = ", ".join(_code(o) for o in [*p.opts, *p.secondary_opts])
            env = p.envvar if isinstance(p.envvar, str) else ", ".join(p.envvar or ())
            required = ", required" if p.required else ""
            rows.append(
                f"| {flags} | {_cell(_type(p, ctx))}{required} | {_cell(p.help or '')} "
                f"| {_code(env)} | {_default(p)} |"
            )
        if rows:
            out.append("| argument or option | type | meaning | environment | default |")
            out.append("|---|---|---|---|---|")
            out += rows
            out.append("")
    return "\n".join(out)


# --- the HTTP API --------------------------------------------------------------------------


@cache
def openapi_document() -> dict[str, Any]:
    """``GET /openapi.json`` of serving's application, for the built-in example project:
    asked in process (no socket), of the application ``streamlearn serve`` runs."""
    import httpx

    from streamlearn.models.registry import FileRegistry
    from streamlearn.project import load_project
    from streamlearn.serving.http import build_api
    from streamlearn.serving.replica import FeatureReplica
    from streamlearn.serving.service import PredictionService
    from streamlearn.streams.kafka.config import KafkaConfig

    project = load_project()
    with tempfile.TemporaryDirectory() as tmp:
        service = PredictionService(
            FileRegistry(Path(tmp) / "registry"),
            {},  # type: ignore[arg-type]  # no request is scored: only the document is read
            list(project.model_catalog.names),
            project.catalog,
        )
        replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), Path(tmp) / "replica", project.catalog)
        try:
            api = build_api(service, None, features=replica)

            async def get() -> dict[str, Any]:
                transport = httpx.ASGITransport(app=api)  # type: ignore[arg-type]
                async with httpx.AsyncClient(transport=transport, base_url="http://serving") as c:
                    r = await c.get("/openapi.json")
                    r.raise_for_status()
                    return r.json()  # type: ignore[no-any-return]

            return asyncio.run(get())
        finally:
            replica.stop()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _schema_type(s: dict[str, Any], link: bool = True) -> str:
    """A JSON Schema as a short type in Markdown (with ``link``, a component's name links
    to its heading on the page)."""
    if "$ref" in s:
        name = _ref_name(s["$ref"])
        return f"[`{name}`](#{name.lower()})" if link else f"`{name}`"
    for key in ("anyOf", "oneOf"):
        if key in s:
            return " or ".join(_schema_type(x, link) for x in s[key])
    if "enum" in s:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in s["enum"])
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    t = s.get("type", "any")
    if t == "array":
        return f"array of {_schema_type(s.get('items', {}), link)}"
    if t == "object" and "additionalProperties" in s:
        extra = s["additionalProperties"]
        inner = _schema_type(extra, link) if isinstance(extra, dict) else "any"
        return f"object of {inner}"
    if isinstance(t, list):
        return " or ".join(f"`{x}`" for x in t)
    return f"`{t}`"


def _limits(s: dict[str, Any]) -> str:
    names = {
        "minLength": "length ≥ {}",
        "maxLength": "length ≤ {}",
        "minItems": "≥ {} items",
        "maxItems": "≤ {} items",
        "minimum": "≥ {}",
        "maximum": "≤ {}",
        "exclusiveMinimum": "> {}",
        "exclusiveMaximum": "< {}",
        "pattern": "matches `{}`",
    }
    return ", ".join(fmt.format(s[k]) for k, fmt in names.items() if k in s)


def _properties(s: dict[str, Any], link: bool = True) -> list[str]:
    required = set(s.get("required", ()))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in s.get("properties", {}).items():
        limits = _limits(prop)
        desc = _cell(prop.get("description", "")) + (f" ({limits})" if limits else "")
        default = f" Default `{json.dumps(prop['default'])}`." if "default" in prop else ""
        rows.append(
            f"| `{name}` | {_schema_type(prop, link)} | {'yes' if name in required else ''} "
            f"| {desc}{_cell(default)} |"
        )
    return rows


def http_reference() -> str:
    """Every route of ``/openapi.json``, grouped by tag, then every body's fields."""
    doc = openapi_document()
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    out = [
        f"Generated from `GET /openapi.json` (OpenAPI {doc['openapi']}, "
        f"[download](openapi.json)) of `{doc['info']['title']}`.\n"
    ]
    for tag, ops in by_tag.items():
        out.append(f"### {tag}\n")
        for method, path, op in ops:
            out.append(f"#### `{method} {path}`\n")
            out.append(_text(op.get("summary", "")) + "\n")
            if op.get("security"):
                out.append("Needs `Authorization: Bearer <token>` (admin).\n")
            body = op.get("requestBody")
            if body:
                ((ctype, media),) = body["content"].items()
                out.append(f"- Request body ({ctype}): {_schema_type(media['schema'])}")
            for code, answer in op["responses"].items():
                kinds = [
                    f"{ctype}: {_schema_type(media['schema'])}"
                    if media.get("schema", {}).get("type") != "string"
                    else ctype
                    for ctype, media in answer.get("content", {}).items()
                ]
                out.append(
                    f"- `{code}` {answer['description']}"
                    + (f" ({'; '.join(kinds)})" if kinds else "")
                )
            out.append("")
    out.append("### Bodies\n")
    for name, schema in sorted(doc["components"]["schemas"].items()):
        out.append(f"#### {name}\n")
        if schema.get("description"):
            out.append(_text(schema["description"].strip()) + "\n")
        if "properties" in schema:
            out += _properties(schema)
        else:
            out.append(f"Type: {_schema_type(schema)}")
        out.append("")
    return "\n".join(out)


# --- metrics -------------------------------------------------------------------------------


def _import_everything() -> dict[str, Any]:
    """Import every module of the package (a metric family is registered when its module
    is imported); return the modules by name."""
    import streamlearn

    for info in pkgutil.walk_packages(streamlearn.__path__, "streamlearn."):
        if info.name.rpartition(".")[2] != "__main__":
            importlib.import_module(info.name)
    return {n: m for n, m in sys.modules.items() if n.startswith("streamlearn.")}


def _process(module: str) -> str:
    for prefix, process in PROCESSES.items():
        if module == prefix or module.startswith(prefix + "."):
            return process
    raise RuntimeError(f"the metric of {module} is exported by no process in PROCESSES")


def metrics_reference() -> str:
    """Every ``streamlearn_*`` metric family: name as scraped, type, labels, help text."""
    from prometheus_client import REGISTRY

    modules = _import_everything()
    collectors = [
        c
        for c in list(REGISTRY._collector_to_names)  # type: ignore[attr-defined]
        if getattr(c, "_name", "").startswith("streamlearn_")
    ]
    rows = []
    for c in collectors:
        literal = re.compile(f'"{c._name}(_total)?"')
        homes = sorted(
            name
            for name, mod in modules.items()
            if any(v is c for v in vars(mod).values())
            and literal.search(Path(mod.__file__).read_text() if mod.__file__ else "")
        )
        if len(homes) != 1:
            raise RuntimeError(f"{c._name}: defined in {homes or 'no module'}, expected one")
        kind = c._type
        scraped = {
            "counter": f"`{c._name}_total`",
            "histogram": f"`{c._name}_bucket`, `_sum`, `_count`",
        }.get(kind, f"`{c._name}`")
        labels = ", ".join(f"`{x}`" for x in c._labelnames)
        rows.append(
            (
                _process(homes[0]),
                c._name,
                f"| {scraped} | {kind} | {labels} | {_cell(c._documentation)} | `{homes[0]}` |",
            )
        )
    out: list[str] = []
    for process in dict.fromkeys(p for p, _, _ in sorted(rows)):
        out.append(f"### {process[0].upper()}{process[1:]}\n")
        out.append("| metric | type | labels | meaning | defined in |\n|---|---|---|---|---|")
        out += [row for p, _, row in sorted(rows) if p == process]
        out.append("")
    return "\n".join(out)


# --- contracts -----------------------------------------------------------------------------


@cache
def contract_schemas() -> dict[str, bytes]:
    """``<name>.schema.json`` → its bytes, as ``streamlearn contracts export`` writes them
    for the built-in example project."""
    from streamlearn.project import load_project
    from streamlearn.streams.schemas import export

    with tempfile.TemporaryDirectory() as tmp:
        paths = export(Path(tmp), load_project().schema)
        return {p.name: p.read_bytes() for p in paths}


def contracts_reference() -> str:
    """Each contract: where it travels, its fields, and its schema file."""
    out = []
    for filename, raw in contract_schemas().items():
        doc = json.loads(raw)
        where = doc["x-streamlearn"]
        name = filename.removesuffix(".schema.json")
        out.append(f"### {name}\n")
        if doc.get("description"):
            out.append(_text(doc["description"].strip()) + "\n")
        key = f"; key: {where['key']}" if where["key"] else ""
        out.append(
            f"Carried by {_text(where['carried-by'])} (the record's {where['part']}"
            f"{_text(key)}). "
            f"Schema: [`{filename}`](schemas/{filename}).\n"
        )
        target = doc
        if "$ref" in doc:
            target = doc["$defs"][_ref_name(doc["$ref"])]
        out += _properties(target, link=False)
        for dep, schema in sorted(doc.get("$defs", {}).items()):
            if schema is target or "properties" not in schema:
                continue
            out.append(f"\n`{dep}`:\n")
            out += _properties(schema, link=False)
        out.append("")
    return "\n".join(out)


GENERATORS: Final[dict[str, Callable[[], str]]] = {
    "cli": cli_reference,
    "http": http_reference,
    "metrics": metrics_reference,
    "contracts": contracts_reference,
}


# --- mkdocs events -------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    """Publish the OpenAPI document and the schema files with the site."""
    from mkdocs.structure.files import File

    generated = {"reference/openapi.json": json.dumps(openapi_document(), indent=2).encode()}
    for name, raw in contract_schemas().items():
        generated[f"reference/schemas/{name}"] = raw
    for uri, content in generated.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each ``<!-- generated: NAME -->`` line with its part."""

    def part(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_uri}: no generated part named {name!r}")
        return GENERATORS[name]()

    return PLACEHOLDER.sub(part, markdown)
