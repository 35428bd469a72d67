"""Learner state that is data only: an ``.npz`` archive of arrays plus a JSON header.

A snapshot's ``state`` is what a trainer resumes from. It used to be a pickle, and
unpickling runs whatever code the file names, so anyone who could write the registry
could run code in the trainer. This format holds numbers and JSON only:

* one ``.npz`` archive (numpy's zip of ``.npy`` files, read with ``allow_pickle=False``,
  so an object array is refused), with
* ``__header__``: UTF-8 JSON ``{"format", "learner", "params", "seed", "feature_spec",
  "negative_rate", "examples_seen", "extra"}``, and
* one array per entry of the learner's ``state_arrays()``.

Its SHA-256 travels in the snapshot's metadata (``state_sha256``) and is verified by
:func:`decode_arrays` before anything is parsed. A learner writes its header and arrays
(:meth:`~streamlearn.models.learners.base.FeaturisedLearner.snapshot`) and is rebuilt by
name through :func:`streamlearn.models.zoo.load_state` (learners known to this code only),
its arrays checked for shape and dtype. A pickle, a tampered archive or a checksum
mismatch raises :class:`~streamlearn.models.errors.SnapshotError` with the reason.

This module knows the format only, not the learners, so it sits below them.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.models.errors import SnapshotError

STATE_FORMAT = "streamlearn.state.v1"
_HEADER = "__header__"
_PICKLE_MAGIC = (b"\x80", b"(", b"c")  # pickle protocol 2+ / 0 / global opcode


@dataclass(frozen=True)
class State:
    """Encoded learner state and its checksum."""

    data: bytes
    sha256: str
    format: str = STATE_FORMAT


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def encode_arrays(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> State:
    """An npz archive of numeric ``arrays`` plus the JSON ``header`` (``format`` is set)."""
    header = {**header, "format": STATE_FORMAT}
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    bad = [k for k, v in arrays.items() if v.dtype.hasobject or k == _HEADER]
    if bad:
        raise SnapshotError(f"state arrays must be numeric, got {bad}")
    buf = io.BytesIO()
    payload = {_HEADER: np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)}
    np.savez(buf, **payload, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    return State(data, sha256(data))


def _refuse_pickle(data: bytes) -> None:
    if data[:1] in _PICKLE_MAGIC:
        raise SnapshotError(
            "learner state is a pickle, which can run code when loaded; streamlearn reads "
            f"only data ({STATE_FORMAT}: npz + JSON). Publish the model again from this version"
        )


def decode_arrays(
    data: bytes, expected_sha256: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_arrays`, after refusing pickles and verifying the checksum."""
    _refuse_pickle(data)
    if not expected_sha256:
        raise SnapshotError("snapshot metadata has no state_sha256: refusing unverified state")
    actual = sha256(data)
    if actual != expected_sha256:
        raise SnapshotError(
            f"state checksum mismatch: metadata says {expected_sha256}, "
            f"the state hashes to {actual} (corrupt or tampered)"
        )
    return _read(data)


def _read(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise SnapshotError(f"learner state is not a {STATE_FORMAT} archive: {exc}") from exc
    raw = arrays.pop(_HEADER, None)
    if raw is None or raw.dtype != np.uint8:
        raise SnapshotError(f"learner state lacks its {_HEADER} (not {STATE_FORMAT})")
    try:
        header = json.loads(raw.tobytes())
    except ValueError as exc:
        raise SnapshotError(f"learner state header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise SnapshotError(f"learner state format must be {STATE_FORMAT!r}, got {got!r}")
    return header, arrays
