"""The step cache: keys, and outputs on disk under ``<root>/<flow>/<step>/<key>/``.

A key is the xxh3-128 of the canonical JSON of: the params the step takes, the keys of
its upstream outputs, its fingerprint (external state it reads), and its code version
(the xxh3 of the step function's source and the package version). Only the step
function's own source is hashed: a change in a helper it calls does not invalidate the
cache (bump the package version, or run with ``use_cache=False``).

A cached output is ``output.msgpack`` (the returned value as data, never a pickle:
:mod:`streamlearn.offline.flow.values`) plus ``step.json`` (what produced it, with the
output's SHA-256), written last and atomically: a directory without ``step.json`` is a
crashed or running execution, never a cached output. An output that does not match its
checksum, cannot be read back as the step's return type, or is a pickle (``output.pkl``,
written by older versions) is refused with a warning and the step runs again: a cache
on a shared file system must not run the code of whoever can write it. Executions of one key are
serialised by an advisory lock (``.<key>.lock``), so parallel runs sharing a step (a
sweep's common replay) compute it once and the others reuse it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import xxhash

from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow.values import decode_value, encode_value
from streamlearn.offline.lineage import code_version

log = logging.getLogger(__name__)

OUTPUT_FILE = "output.msgpack"
RECORD_FILE = "step.json"
#: the pickled output of older versions: refused, never read
PICKLED_FILE = "output.pkl"


def canonical_json(value: Any, what: str) -> bytes:
    """Sorted-key JSON of ``value``; :class:`FlowError` when it is not JSON-safe."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise FlowError(f"expected JSON-safe {what}, got {value!r}: {exc}") from None


@functools.cache
def _source_hash(fn: Callable[..., Any]) -> str:
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):  # no source on disk (e.g. defined in a REPL): the bytecode
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_consts) if code else fn).encode()
    return xxhash.xxh3_64_hexdigest(text)


def code_identity(fn: Callable[..., Any]) -> dict[str, str]:
    """``{"source": xxh3 of the function's source, "package": package version}``."""
    return {"source": _source_hash(fn), "package": str(code_version()["package"])}


def step_key(
    params: dict[str, Any],
    inputs: dict[str, str],
    code: dict[str, str],
    fingerprint: Any = None,
) -> str:
    """The cache key of a step execution (see the module docstring)."""
    material = {"params": params, "inputs": inputs, "code": code, "fingerprint": fingerprint}
    return xxhash.xxh3_128_hexdigest(canonical_json(material, "step params and fingerprint"))


@dataclass(frozen=True)
class Cached:
    """A cached output: the value and the record of the execution that produced it."""

    value: Any
    record: dict[str, Any]


class StepCache:
    """Cached step outputs of one flow under ``<root>/<flow>/``."""

    def __init__(self, root: Path, flow: str) -> None:
        self.base = Path(root) / flow

    def path(self, step: str, key: str) -> Path:
        """The directory of ``step``'s output for ``key`` (also the step's ``ctx.out``)."""
        return self.base / step / key

    def load(self, step: str, key: str, kind: Any = Any) -> Cached | None:
        """The cached output (read as ``kind``, the step's return type), or ``None`` when
        absent, incomplete, unreadable or refused (a pickle, a checksum mismatch)."""
        d = self.path(step, key)
        try:
            record = json.loads((d / RECORD_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the cache of step=%s key=%s: %s", step, key, exc)
            return None
        if (d / PICKLED_FILE).exists():
            log.warning(
                "refusing the cache of step=%s key=%s: %s is a pickle, which can run code "
                "when loaded; the step runs again",
                step,
                key,
                d / PICKLED_FILE,
            )
            return None
        try:
            data = (d / OUTPUT_FILE).read_bytes()
            want = record.get("output_sha256")
            if hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"expected the output's sha256 to be {want}, got another")
            value = decode_value(data, kind)
        except Exception as exc:  # anything but a valid output: refused, the step reruns
            log.warning("refusing the cache of step=%s key=%s: %s", step, key, exc)
            return None
        return Cached(value, record)

    @contextmanager
    def lock(self, step: str, key: str) -> Iterator[None]:
        """Hold the advisory lock of one (step, key) execution."""
        d = self.base / step
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f".{key}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def begin(self, step: str, key: str) -> Path:
        """An empty directory for an execution (any previous or partial one removed)."""
        d = self.path(step, key)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def commit(self, step: str, key: str, value: Any, record: dict[str, Any]) -> None:
        """Store ``value`` and mark the execution complete by writing its record last."""
        d = self.path(step, key)
        data = encode_value(value, f"step {step!r}")
        with open(d / OUTPUT_FILE, "wb") as fh:
            fh.write(data)
        record = {**record, "output_sha256": hashlib.sha256(data).hexdigest()}
        fd, tmp = tempfile.mkstemp(prefix=".step-", dir=d)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, d / RECORD_FILE)

    def discard(self, step: str, key: str) -> None:
        """Remove a failed execution's directory."""
        shutil.rmtree(self.path(step, key), ignore_errors=True)
