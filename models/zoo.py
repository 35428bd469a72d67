"""Learners by name, imported lazily (serving never pays for torch or river); a learner
whose extra is not installed fails with :class:`~streamlearn.models.errors.MissingExtra`."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Final

from streamlearn.models.errors import ModelError, SnapshotError
from streamlearn.models.extras import require
from streamlearn.models.features import FeatureSpec
from streamlearn.models.learners.base import FeaturisedLearner
from streamlearn.models.learners.downsampled import Downsampled
from streamlearn.models.protocol import Learner
from streamlearn.models.state import decode_arrays

#: The learner ``eval`` and the online trainer use unless told otherwise (chosen on the
#: public tables and the simulator: see ``bench/bench_learners.py`` and docs/benchmarks.md).
DEFAULT_LEARNER: Final = "ftrl"
#: Rows per learning call. ``ftrl``, ``fm`` and ``deep``'s wide part learn one example at
#: a time whatever the call's size, and ``deep``'s deep part steps every ``micro_batch``
#: (32) examples counted across calls, so this only sets how much work one call does:
#: any size gives the same predictions, to the bit.
DEFAULT_BATCH_SIZE: Final = 1024

_LEARNERS: dict[str, str] = {
    "ftrl": "streamlearn.models.learners.ftrl:FTRL",
    "fm": "streamlearn.models.learners.fm:FM",
    "deep": "streamlearn.models.learners.deep:Deep",
    "river-lr": "streamlearn.models.learners.river_adapter:RiverLR",
}
#: The extra of the install each learner beyond the core ones needs.
_EXTRAS: dict[str, str] = {"deep": "deep", "river-lr": "river"}


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_LEARNERS)


def require_learner(name: str) -> None:
    """Fail now, with the extra to install, when learner ``name`` could not be created
    (the ``up`` supervisor checks before it starts the trainers)."""
    if name not in _LEARNERS:
        raise ModelError(f"learner must be one of {available()}, got {name!r}")
    if name in _EXTRAS:
        require(_EXTRAS[name], f"the {name!r} learner")


def _learner_class(name: str) -> Any:
    require_learner(name)
    module_name, _, cls_name = _LEARNERS[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise :class:`ModelError` unless learner ``name`` accepts ``params``."""
    signature = inspect.signature(_learner_class(name))
    try:
        signature.bind(None, seed=0, **params)
    except TypeError:
        accepted = [p for p in signature.parameters if p not in ("spec", "seed")]
        raise ModelError(
            f"parameters of learner {name!r} must be among {accepted}, got {sorted(params)}"
        ) from None


def create(
    name: str,
    spec: FeatureSpec,
    seed: int = 0,
    negative_rate: float | None = None,
    **params: Any,
) -> Learner:
    """A new learner ``name`` over ``spec`` with hyper-parameters ``params``.

    ``negative_rate`` below 1 wraps it in
    :class:`~streamlearn.models.learners.downsampled.Downsampled` (a calibrated head:
    negatives kept at that rate, predictions corrected).
    """
    cls = _learner_class(name)
    check_params(name, params)
    learner = cls(spec, seed=seed, **params)
    if negative_rate is not None and negative_rate < 1.0:
        learner = Downsampled(learner, negative_rate, seed=seed)
    result: Learner = learner
    return result


def load_state(data: bytes, expected_sha256: str | None) -> FeaturisedLearner:
    """Rebuild a learner from the state its snapshot wrote; verifies the checksum first.

    ``expected_sha256`` is the snapshot metadata's ``state_sha256``; ``None`` refuses the
    state (a version without a checksum predates the format of
    :mod:`streamlearn.models.state`).
    """
    header, arrays = decode_arrays(data, expected_sha256)
    try:
        spec = FeatureSpec.from_dict(header["feature_spec"])
        inner = create(
            str(header["learner"]), spec, seed=int(header["seed"]), **dict(header["params"])
        )
        if not isinstance(inner, FeaturisedLearner):
            raise SnapshotError(f"learner {header['learner']!r} does not restore from state")
        learner = inner
        rate = header.get("negative_rate")
        if rate is not None:
            learner = Downsampled(inner, float(rate), seed=int(header["wrapper_seed"]))
        learner.load_state_arrays(arrays)
        learner.load_state_extra(header.get("extra") or {})
        learner.examples_seen = int(header["examples_seen"])
    except SnapshotError:
        raise
    except ModelError as exc:
        raise SnapshotError(f"learner state names an unusable learner: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"learner state header is not usable: {exc!r}") from exc
    return learner
