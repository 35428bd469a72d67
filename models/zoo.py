"""Learners by name, imported lazily (serving never pays for torch or river)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Final

from models.errors import ModelError
from models.features import FeatureSpec
from models.protocol import Learner

#: The learner ``eval`` and the online trainer use unless told otherwise (chosen on the
#: public tables and the simulator: see ``bench/bench_learners.py`` and the README).
DEFAULT_LEARNER: Final = "ftrl"
#: Rows per learning call. ``ftrl``, ``fm`` and ``deep``'s wide part learn one example at
#: a time whatever the call's size, and ``deep``'s deep part steps every ``micro_batch``
#: (32) examples counted across calls, so this only sets how much work one call does:
#: any size gives the same predictions, to the bit.
DEFAULT_BATCH_SIZE: Final = 1024

_LEARNERS: dict[str, str] = {
    "ftrl": "models.learners.ftrl:FTRL",
    "fm": "models.learners.fm:FM",
    "deep": "models.learners.deep:Deep",
    "river-lr": "models.learners.river_adapter:RiverLR",
}


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_LEARNERS)


def create(
    name: str,
    spec: FeatureSpec,
    seed: int = 0,
    negative_rate: float | None = None,
    **params: Any,
) -> Learner:
    """A new learner ``name`` over ``spec`` with hyper-parameters ``params``.

    ``negative_rate`` below 1 wraps it in :class:`~models.learners.downsampled.Downsampled`
    (the calibrated ads head: negatives kept at that rate, predictions corrected).
    """
    try:
        target = _LEARNERS[name]
    except KeyError:
        raise ModelError(f"learner must be one of {available()}, got {name!r}") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    signature = inspect.signature(cls)
    try:
        signature.bind(spec, seed=seed, **params)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p not in ("spec", "seed")]
        raise ModelError(
            f"parameters of learner {name!r} must be among {accepted}, got {sorted(params)}"
        ) from exc
    learner = cls(spec, seed=seed, **params)
    if negative_rate is not None and negative_rate < 1.0:
        from models.learners.downsampled import Downsampled

        learner = Downsampled(learner, negative_rate, seed=seed)
    result: Learner = learner
    return result
