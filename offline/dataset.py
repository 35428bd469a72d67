"""Replayed datasets on disk: ``data.parquet``, ``rejected.jsonl`` and ``manifest.json``.

A dataset directory is written to a hidden temporary sibling and renamed into place, so
a reader sees a whole dataset or none. The manifest says what the dataset holds and
where it came from; its ``checksum`` identifies the content (see ``streamlearn.offline.replay``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamlearn.offline.errors import DatasetError

DATA_FILE = "data.parquet"
REJECTED_FILE = "rejected.jsonl"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


def schema_dict(schema: pa.Schema) -> dict[str, str]:
    """``{column: arrow type}`` for the manifest."""
    return {f.name: str(f.type) for f in schema}


@contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds."""
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise DatasetError(f"expected {final} to be absent or empty, it holds files (overwrite?)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (sorted keys, indented)."""
    text = json.dumps({"manifest_version": MANIFEST_VERSION, **manifest}, indent=1, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(text + "\n")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a dataset directory; :class:`DatasetError` when missing or broken."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"expected a dataset manifest at {path}, found none") from None
    except ValueError as exc:
        raise DatasetError(f"expected JSON in {path}: {exc}") from None
    if not isinstance(data, dict) or "checksum" not in data:
        raise DatasetError(f"expected a manifest object with a checksum in {path}")
    return data


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a dataset: ``path`` itself, or the ``*.parquet`` in a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise DatasetError(f"expected a Parquet file or a directory with *.parquet, got {path}")
    return files


def iter_batches(path: Path, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Stream the rows of a dataset in record batches (bounded memory)."""
    for f in parquet_files(path):
        try:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"cannot read Parquet at {f}: {exc}") from exc
