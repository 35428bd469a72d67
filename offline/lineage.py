"""Lineage facts: the code version and a dataset's identity."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import xxhash

from streamlearn import __version__
from streamlearn.offline.dataset import MANIFEST_FILE, parquet_files, read_manifest


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"package": version, "git_commit": sha | None, "git_dirty": bool | None}``."""
    package = __version__
    commit: str | None = None
    dirty: bool | None = None
    root = Path(__file__).resolve().parent.parent
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package, "git_commit": commit, "git_dirty": dirty}


def dataset_identity(path: Path) -> dict[str, Any]:
    """Path, checksum and row count of a dataset: from its manifest, else hashed here."""
    path = Path(path).resolve()
    if path.is_dir() and (path / MANIFEST_FILE).exists():
        m = read_manifest(path)
        return {
            "path": str(path),
            "checksum": m["checksum"],
            "records": m.get("records"),
            "manifest": str(path / MANIFEST_FILE),
        }
    h = xxhash.xxh3_128()
    for f in parquet_files(path):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return {"path": str(path), "checksum": "xxh3_128-file:" + h.hexdigest(), "manifest": None}
