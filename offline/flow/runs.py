"""Run records (lineage): one JSON per run under ``<root>/<flow>/_runs/<run_id>.json``.

A record holds the resolved params, the code version, and for every step of the run its
key, params, upstream keys, fingerprint, an output summary, timings and status
(``executed``, ``cached``, ``failed`` or ``skipped``). It is rewritten after every step,
so a crashed run still leaves what it did.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RUNS_DIR = "_runs"
_MAX_ITEMS = 50
_MAX_TEXT = 300


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a short random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat()


def summarize(value: Any, depth: int = 3) -> Any:
    """A JSON-safe summary of a step output: scalars kept, containers trimmed, blobs named."""
    if value is None or isinstance(value, bool | int | str):
        return (
            value
            if not isinstance(value, str) or len(value) <= _MAX_TEXT
            else (value[:_MAX_TEXT] + "…")
        )
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        return summarize(value.item(), depth)
    if depth <= 0:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        items = list(value.items())[:_MAX_ITEMS]
        return {str(k): summarize(v, depth - 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [summarize(v, depth - 1) for v in value[:_MAX_ITEMS]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: summarize(getattr(value, f.name), depth - 1) for f in dataclasses.fields(value)
        }
    return f"<{type(value).__name__}>"


def runs_dir(root: Path, flow: str) -> Path:
    """Where the run records of ``flow`` live."""
    return Path(root) / flow / RUNS_DIR


def write_record(root: Path, record: dict[str, Any]) -> Path:
    """Write (or replace) a run record atomically; return its path."""
    d = runs_dir(root, record["flow"])
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{record['run_id']}.json"
    fd, tmp = tempfile.mkstemp(prefix=".run-", dir=d)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, final)
    return final


def read_runs(root: Path, flow: str) -> list[dict[str, Any]]:
    """Every run record of ``flow``, oldest first."""
    d = runs_dir(root, flow)
    if not d.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
