"""Finding flows by name: the built-in ones plus those of a user's module.

A user module is a Python file (``my_flows.py``) or a dotted module name; every
module-level :class:`~streamlearn.offline.flow.graph.Flow` in it is a flow. A file is imported under
a name derived from its resolved path, the same in every process, so a sweep's worker
processes load it again and unpickle what its steps returned.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import xxhash

from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow.graph import Flow

BUILTIN_MODULES = ("streamlearn.offline.flow.retrain", "streamlearn.offline.flow.vision")


def _load_file(path: Path) -> ModuleType:
    resolved = path.resolve()
    name = f"_streamlearn_flows_{xxhash.xxh3_64_hexdigest(str(resolved).encode())}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise FlowError(f"expected a Python file of flows, got {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_module(ref: str) -> ModuleType:
    """Import a flows module: a ``.py`` file path or a dotted module name."""
    try:
        if ref.endswith(".py") or "/" in ref:
            path = Path(ref)
            if not path.is_file():
                raise FlowError(f"expected a Python file of flows at {path}, found none")
            return _load_file(path)
        return importlib.import_module(ref)
    except FlowError:
        raise
    except Exception as exc:  # whatever the user's module raises on import
        raise FlowError(f"cannot load flows from {ref}: {type(exc).__name__}: {exc}") from exc


def flows_in(module: ModuleType) -> dict[str, Flow]:
    """The module-level flows of ``module`` by name."""
    return {v.name: v for v in vars(module).values() if isinstance(v, Flow)}


def discover(module: str | None = None) -> dict[str, Flow]:
    """Built-in flows plus those of ``module``, by name (a name may be declared once)."""
    found: dict[str, Flow] = {}
    origin: dict[str, str] = {}
    refs = [*BUILTIN_MODULES, *([module] if module else [])]
    for ref in refs:
        for name, flow in flows_in(load_module(ref)).items():
            if name in found and found[name] is not flow:
                raise FlowError(
                    f"expected one flow named {name!r}, got one in {origin[name]} and one in {ref}"
                )
            found[name], origin[name] = flow, ref
    return dict(sorted(found.items()))


def get_flow(name: str, module: str | None = None) -> Flow:
    """The flow called ``name``; :class:`FlowError` listing the known flows when unknown."""
    flows = discover(module)
    try:
        return flows[name]
    except KeyError:
        where = f" (built-in and {module})" if module else " (built-in; --module adds yours)"
        raise FlowError(f"expected a flow among {sorted(flows)}{where}, got {name!r}") from None
