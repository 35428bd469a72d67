"""A model registry on a file system: atomic publishes, versions and stages.

Layout::

    <root>/<model>/v00000001/{model.onnx, state.npz, metadata.json, rows.json?, evaluation.json?}
    <root>/<model>/stages.json        {"1": "production", "2": "archived", …}

A version is written into a hidden temporary directory, fsync'd, and renamed into place
with one ``os.rename``: readers see a whole version or none. Stages (:class:`Stage`) live in
``stages.json``, replaced atomically under an advisory lock. A version with no stage
entry has the stage it was published with (``metadata["stage"]``: ``candidate`` or
``rejected``, so a version that must not be served is never servable, not even for an
instant), else ``"none"``. At most one version per model is ``"production"``: promoting
one archives the previous production version. Promotion history and rollback are in
:mod:`streamlearn.models.stages`.

Which version serves (:meth:`FileRegistry.serving_version`): the production version;
else the newest version that is neither a candidate nor rejected; else the newest
candidate (a model that has nothing else, such as an offline-only vision model). A
``"rejected"`` version is never served. While another version serves, the newest
candidate is the *shadow* (:meth:`FileRegistry.shadow_version`): scored beside it,
never answered with (see ``streamlearn.models.rollout``).

``rows.json`` (optional) holds raw feature rows the version was checked on for ONNX
parity (``streamlearn.models.parity``), published with it so a trainer that resumes from
it checks its next versions on real rows at once.

``evaluation.json`` is the live evaluation of a version (``streamlearn.models.evaluation``), written
after it was published (by the online trainer, as labelled outcomes join); it is the
one file of a version that changes.

A version may carry more files of its own, written with it (``publish(files=…)``, read
with :meth:`FileRegistry.read_file`): the online trainer keeps its rollout state there
(``rollout.json``), so ``metadata.json`` stays small — serving reads the metadata of
every version it considers, and reads each one once (:class:`FileRegistry` caches a
version's metadata, checked against its file's identity, since it never changes).
The serving and shadow versions are remembered with the identity of the model's
directory and ``stages.json``: a poll when nothing changed reads no file at all.

``state.npz`` is data only (:mod:`streamlearn.models.state`); ``metadata.json`` carries its
``state_sha256``, which :meth:`FileRegistry.load_learner` verifies before reading it. A
version whose state is a pickle (``state.pkl``, from before this format) is refused, never
unpickled. This module imports neither torch nor river (serving imports it);
``load_learner`` imports what the learner needs at that moment.

A *serving-only* version (``serving_only`` in its metadata) has no ``state.npz``: the
online trainer publishes one about every second for serving and a full one (a resume
point) less often. :meth:`FileRegistry.prune` deletes old versions (retention), keeping
the newest, the newest resume points and every staged version.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, NamedTuple

from streamlearn.models.errors import RegistryError, SnapshotError
from streamlearn.models.snapshot import SERVING_ONLY, Snapshot


class Stage(StrEnum):
    """A model version's stage in the registry.

    Each member equals its value, the string kept on disk (``stages.json``, a version's
    ``metadata["stage"]``) and shown in replies (``streamlearn models list``, serving's
    ``/v1/models``, the ``model-updates`` records), so comparing one with a string read
    back works. A version with no stage is :data:`NO_STAGE`.

    Attributes
    ----------
    CANDIDATE
        Published to be compared before it serves: the newest candidate is the *shadow*,
        scored beside the serving version and never answered with. A candidate serves
        only when the model has no other version that may (e.g. an offline-only vision
        model).
    PRODUCTION
        The version promoted to serve; at most one per model (promoting one archives
        the previous one).
    ARCHIVED
        A version that was production, or that the rollout promoted into the online
        lineage; servable like a version with no stage, and a rollback target.
    REJECTED
        Never served, not even for an instant (a failed parity check, a rollout's or
        an operator's rejection).
    """

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"


#: The stage of a version that has none (neither set nor published with one).
NO_STAGE: Final = "none"
#: Stages a version may be published with (see :meth:`FileRegistry.publish`).
_PUBLISH_STAGES: Final = (Stage.CANDIDATE, Stage.REJECTED)
_VERSION_DIR = re.compile(r"^v(\d{8})$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_PUBLISH_TRIES = 100
STATE_FILE = "state.npz"
EVALUATION_FILE = "evaluation.json"
ROWS_FILE = "rows.json"
#: Files of a version that ``publish(files=…)`` may not name.
_OWN_FILES = frozenset({"model.onnx", STATE_FILE, "metadata.json", EVALUATION_FILE, ROWS_FILE})
_FILE_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z0-9]+$")
#: A remembered answer is trusted only when the files it was read from had not changed
#: for this long before it was read: file times are coarse (a tick of the kernel's clock,
#: or a network file system's), so a change within the same tick would look like none.
_SETTLED_S: Final = 1.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_stages(model_dir: Path) -> dict[int, str]:
    try:
        raw = json.loads((model_dir / "stages.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"stages.json in {model_dir} must be a JSON object, got: {exc}"
        ) from exc
    return {int(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a model (``metadata`` is shared with the registry's
    cache: read it, never change it)."""

    model: str
    version: int
    path: Path
    metadata: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        """Path of this version's ONNX graph."""
        return self.path / "model.onnx"

    @property
    def serving_only(self) -> bool:
        """True for a version published without its learner state (not a resume point)."""
        return bool(self.metadata.get(SERVING_ONLY))

    @property
    def stage(self) -> str:
        """Current stage (read from ``stages.json`` now), else the stage it was published
        with: a :class:`Stage` value, else :data:`NO_STAGE`."""
        return _read_stages(self.path.parent).get(self.version, self.published_stage)

    @property
    def published_stage(self) -> str:
        """The stage this version was published with (``"none"`` when none)."""
        return str(self.metadata.get("stage") or NO_STAGE)


class _FileId(NamedTuple):
    """What changes when a file or directory is replaced or its entries change."""

    ino: int
    mtime_ns: int
    size: int


def _id(st: os.stat_result) -> _FileId:
    return _FileId(st.st_ino, st.st_mtime_ns, st.st_size)


def _file_id(path: Path) -> _FileId | None:
    try:
        return _id(os.stat(path))
    except FileNotFoundError:
        return None


class _Remembered(NamedTuple):
    """The serving and shadow versions of a model, with what they were read from."""

    key: tuple[_FileId | None, _FileId | None]
    settled: bool
    serving: ModelVersion | None
    shadow: ModelVersion | None


class FileRegistry:
    """Model versions stored under one root directory (see the module docstring).

    Safe to share between threads. ``metadata_reads`` counts the ``metadata.json`` files
    read (each version's once, unless its file is replaced).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata_reads = 0
        self._metadata: dict[tuple[str, int], tuple[_FileId, ModelVersion]] = {}
        self._remembered: dict[str, _Remembered] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}  # pickled (e.g. to a worker): its caches start empty

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def _model_dir(self, model: str) -> Path:
        if not _MODEL_NAME.match(model):
            raise RegistryError(
                f"model name must match {_MODEL_NAME.pattern} (letters, digits, _ . -), "
                f"got {model!r}"
            )
        return self.root / model

    def _version_numbers(self, model_dir: Path) -> list[int]:
        try:
            names = os.listdir(model_dir)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        found = (_VERSION_DIR.match(n) for n in names)
        numbers = sorted(int(m.group(1)) for m in found if m)
        present = set(numbers)
        with self._lock:  # pruned versions: forget their metadata
            for k in [k for k in self._metadata if k[0] == model_dir.name]:
                if k[1] not in present:
                    del self._metadata[k]
        return numbers

    def publish(
        self,
        model: str,
        snapshot: Snapshot,
        extra: Mapping[str, Any] | None = None,
        stage: Stage | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> ModelVersion:
        """Write ``snapshot`` as the next version of ``model``; atomic for readers.

        ``stage`` (``candidate`` or ``rejected``) is the version's stage from the moment
        it exists (kept in its metadata), so it is never served as "the newest".
        ``rows``: raw feature rows kept with the version (``rows.json``, see
        :meth:`rows`).
        ``files``: more files of the version by name (``name.ext``, lower case), written
        with it (see :meth:`read_file`)."""
        if stage is not None and stage not in _PUBLISH_STAGES:
            raise RegistryError(
                f"a version is published as one of {', '.join(_PUBLISH_STAGES)}, got {str(stage)!r}"
            )
        for name in files or {}:
            if not _FILE_NAME.match(name) or name in _OWN_FILES:
                raise RegistryError(
                    f"a version's own file is named like {_FILE_NAME.pattern} and is none "
                    f"of {sorted(_OWN_FILES)}, got {name!r}"
                )
        model_dir = self._model_dir(model)
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
        try:
            _write_file(tmp / "model.onnx", snapshot.onnx)
            if not snapshot.serving_only:
                _write_file(tmp / STATE_FILE, snapshot.state)
            if rows is not None:
                _write_file(tmp / ROWS_FILE, json.dumps(list(rows)).encode())
            for name, data in (files or {}).items():
                _write_file(tmp / name, data)
            for _ in range(_MAX_PUBLISH_TRIES):
                numbers = self._version_numbers(model_dir)
                version = (numbers[-1] if numbers else 0) + 1
                metadata = {
                    **snapshot.metadata,
                    **(extra or {}),
                    "model": model,
                    "version": version,
                    "created_at": time.time(),
                }
                if stage is not None:
                    metadata["stage"] = str(stage)
                _write_file(tmp / "metadata.json", json.dumps(metadata, sort_keys=True).encode())
                _fsync_dir(tmp)
                final = model_dir / f"v{version:08d}"
                try:
                    os.rename(tmp, final)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue  # another publisher took this number: try the next
                    raise
                _fsync_dir(model_dir)
                if stage is not None:  # also in stages.json: retention keeps staged versions
                    self.set_stage(model, version, stage)
                return ModelVersion(model, version, final, metadata)
            raise RegistryError(
                f"expected to publish {model!r} within {_MAX_PUBLISH_TRIES} tries, "
                "got a version-number race every time"
            )
        except OSError as exc:
            raise RegistryError(f"could not publish {model!r} under {model_dir}: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def version_numbers(self, model: str) -> list[int]:
        """The version numbers of ``model``, ascending, without reading their metadata."""
        return self._version_numbers(self._model_dir(model))

    def prune(
        self, model: str, keep: int, keep_resumable: int = 2, protect: Iterable[int] = ()
    ) -> list[int]:
        """Delete old versions of ``model``; return the numbers deleted.

        Kept: the newest ``keep`` versions, the newest ``keep_resumable`` that carry a
        learner state (not serving-only: resume points), every version with a stage
        (candidate, production, archived, rejected — set, or published with one in its
        metadata: their history stays readable) and ``protect``. A version is renamed out
        of sight first, then deleted, so a reader sees it whole or not at all.
        """
        if keep < 1:
            raise RegistryError(f"expected to keep at least 1 version, got {keep}")
        model_dir = self._model_dir(model)
        numbers = self._version_numbers(model_dir)
        kept = set(numbers[-keep:]) | set(protect) | set(_read_stages(model_dir))
        resumable = [v for v in numbers if (model_dir / f"v{v:08d}" / STATE_FILE).exists()]
        kept |= set(resumable[-keep_resumable:] if keep_resumable > 0 else [])
        deleted = []
        for v in numbers:
            if v in kept:
                continue
            path = model_dir / f"v{v:08d}"
            try:  # a stage the version was published with counts as a stage
                if json.loads((path / "metadata.json").read_text()).get("stage") in tuple(Stage):
                    continue
            except (OSError, ValueError):
                pass  # unreadable: an incomplete version, deleted like the others
            trash = model_dir / f".pruned-{path.name}-{os.getpid()}"
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                continue  # pruned by another process
            shutil.rmtree(trash, ignore_errors=True)
            deleted.append(v)
        for left in model_dir.glob(".pruned-*"):  # a prune that died half-way
            shutil.rmtree(left, ignore_errors=True)
        return deleted

    def models(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and self._version_numbers(p)
        )

    def _load(self, model: str, version: int) -> ModelVersion:
        path = self._model_dir(model) / f"v{version:08d}"
        fid = _file_id(path / "metadata.json")
        cached = self._metadata.get((model, version))
        if cached is not None and cached[0] == fid:
            return cached[1]
        try:
            with open(path / "metadata.json", "rb") as fh:
                fid = _id(os.fstat(fh.fileno()))
                metadata = json.loads(fh.read())
        except FileNotFoundError as exc:
            raise RegistryError(
                f"expected version {version} of model {model!r} at {path}, found none"
            ) from exc
        except ValueError as exc:
            raise RegistryError(f"metadata.json of {path} is not JSON: {exc}") from exc
        mv = ModelVersion(model, version, path, metadata)
        with self._lock:
            self.metadata_reads += 1
            self._metadata[(model, version)] = (fid, mv)
        return mv

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, ascending; empty when the model is unknown (a
        version pruned while they are read is left out)."""
        model_dir = self._model_dir(model)
        out = []
        for v in self._version_numbers(model_dir):
            try:
                out.append(self._load(model, v))
            except RegistryError:
                if (model_dir / f"v{v:08d}").exists():
                    raise
        return out

    def latest(self, model: str) -> ModelVersion | None:
        """The highest version of ``model``, or ``None``."""
        numbers = self._version_numbers(self._model_dir(model))
        return self._load(model, numbers[-1]) if numbers else None

    def get(self, model: str, version: int) -> ModelVersion:
        """Version ``version`` of ``model``; :class:`RegistryError` when missing."""
        return self._load(model, int(version))

    def read_onnx(self, mv: ModelVersion) -> bytes:
        """The ONNX bytes of ``mv``."""
        try:
            return mv.onnx_path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read the ONNX graph at {mv.onnx_path}: {exc}") from exc

    def read_file(self, mv: ModelVersion, name: str) -> bytes | None:
        """A file ``mv`` was published with (``publish(files=…)``); ``None`` when it has
        none of that name."""
        try:
            return (mv.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {mv.path / name}: {exc}") from exc

    def load_learner(self, mv: ModelVersion) -> Any:
        """The learner of ``mv``, rebuilt from its data-only state (checksum verified).

        :class:`RegistryError` when the state is missing, a pickle, corrupt, or does not
        match ``state_sha256`` in the metadata.
        """
        from streamlearn.models.zoo import load_state

        if mv.serving_only:
            raise RegistryError(
                f"version {mv.version} of model {mv.model!r} is serving-only: it was "
                "published without its learner state; load a version that has one"
            )
        path = mv.path / STATE_FILE
        if not path.exists() and (mv.path / "state.pkl").exists():
            raise RegistryError(
                f"refusing the pickled learner state at {mv.path / 'state.pkl'}: pickles can "
                "run code when loaded; publish this model again to store its state as data"
            )
        try:
            return load_state(path.read_bytes(), mv.metadata.get("state_sha256"))
        except OSError as exc:
            raise RegistryError(f"cannot read the learner state at {path}: {exc}") from exc
        except SnapshotError as exc:
            raise RegistryError(f"cannot load the learner state at {path}: {exc}") from exc

    @contextmanager
    def _stages_lock(self, model_dir: Path) -> Iterator[None]:
        with open(model_dir / ".stages.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def set_stage(self, model: str, version: int, stage: Stage) -> ModelVersion:
        """Mark ``version`` with ``stage``; a new production version archives the old one."""
        if stage not in tuple(Stage):
            raise RegistryError(f"stage must be one of {', '.join(Stage)}, got {str(stage)!r}")
        mv = self.get(model, version)
        model_dir = mv.path.parent
        with self._stages_lock(model_dir):
            stages = _read_stages(model_dir)
            if stage == Stage.PRODUCTION:
                for v, s in stages.items():
                    if s == Stage.PRODUCTION and v != mv.version:
                        stages[v] = Stage.ARCHIVED
            stages[mv.version] = Stage(stage)
            data = json.dumps({str(v): s for v, s in sorted(stages.items())}, indent=1)
            fd, tmp = tempfile.mkstemp(prefix=".stages-", dir=model_dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, model_dir / "stages.json")
            _fsync_dir(model_dir)
        return mv

    def _staged(self, model: str) -> Iterator[tuple[ModelVersion, str]]:
        """Versions of ``model`` with their stage, newest first (metadata read lazily)."""
        model_dir = self._model_dir(model)
        stages = _read_stages(model_dir)
        for v in reversed(self._version_numbers(model_dir)):
            try:
                mv = self._load(model, v)
            except RegistryError:
                continue  # removed meanwhile (retention)
            yield mv, stages.get(v, mv.published_stage)

    def serving_version(self, model: str) -> ModelVersion | None:
        """The version of ``model`` to serve (see the module docstring); ``None`` when
        there is none."""
        return self._remember(model).serving

    def shadow_version(self, model: str) -> ModelVersion | None:
        """The newest candidate of ``model`` when another version serves (it is scored
        beside production as a shadow); ``None`` otherwise."""
        return self._remember(model).shadow

    def _remember(self, model: str) -> _Remembered:
        """The serving and shadow versions, found again only when the model's directory
        or ``stages.json`` changed (or changed too recently to tell: ``_SETTLED_S``)."""
        model_dir = self._model_dir(model)
        started = time.time()
        key = (_file_id(model_dir), _file_id(model_dir / "stages.json"))
        got = self._remembered.get(model)
        if got is not None and got.settled and got.key == key:
            return got
        serving = self._find_serving(model)
        shadow = None if serving is None else self._find_shadow(model, serving)
        newest = max((k.mtime_ns for k in key if k is not None), default=0) / 1e9
        got = _Remembered(key, started - newest > _SETTLED_S, serving, shadow)
        self._remembered[model] = got
        return got

    def _find_serving(self, model: str) -> ModelVersion | None:
        stages = _read_stages(self._model_dir(model))
        production = [v for v, s in stages.items() if s == Stage.PRODUCTION]
        if production:
            try:
                return self.get(model, max(production))
            except RegistryError:
                pass  # removed by hand: fall back to the newest servable
        newest_candidate = None
        for mv, stage in self._staged(model):
            if stage in (NO_STAGE, Stage.ARCHIVED):
                return mv
            if stage == Stage.CANDIDATE and newest_candidate is None:
                newest_candidate = mv
        return newest_candidate

    def _find_shadow(self, model: str, serving: ModelVersion) -> ModelVersion | None:
        model_dir = self._model_dir(model)
        stages = _read_stages(model_dir)
        # A version published with a stage is in stages.json too, a moment after its
        # rename: only versions newer than every stages.json entry need their metadata.
        staged_up_to = max(stages, default=0)
        for v in reversed(self._version_numbers(model_dir)):
            if v <= staged_up_to:
                break
            try:
                mv = self._load(model, v)
            except RegistryError:
                continue
            if mv.published_stage == Stage.CANDIDATE and v not in stages:
                return None if v == serving.version else mv
        for v in sorted((v for v, s in stages.items() if s == Stage.CANDIDATE), reverse=True):
            if v == serving.version:
                return None
            try:
                return self._load(model, v)
            except RegistryError:
                continue  # removed by hand
        return None

    def rows(self, mv: ModelVersion) -> list[dict[str, Any]]:
        """The raw feature rows published with ``mv`` (empty when none were)."""
        try:
            data = json.loads((mv.path / ROWS_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {mv.path / ROWS_FILE}: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise RegistryError(f"expected a JSON list of rows in {mv.path / ROWS_FILE}")
        return data

    def evaluation(self, mv: ModelVersion) -> dict[str, Any]:
        """``mv``'s live evaluation (``evaluation.json``), empty when none was written."""
        try:
            data = json.loads((mv.path / EVALUATION_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {mv.path / EVALUATION_FILE}: {exc}") from exc
        return dict(data)

    def write_evaluation(self, model: str, version: int, data: Mapping[str, Any]) -> None:
        """Replace the live evaluation of ``version`` (atomic; a removed version is
        skipped)."""
        path = self._model_dir(model) / f"v{int(version):08d}"
        if not path.is_dir():
            return
        fd, tmp = tempfile.mkstemp(prefix=".evaluation-", dir=path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(data, sort_keys=True).encode())
            os.replace(tmp, path / EVALUATION_FILE)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if path.is_dir():
                raise RegistryError(f"cannot write the evaluation of {path}: {exc}") from exc
