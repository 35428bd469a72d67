"""Learners by name, imported lazily (serving never pays for torch or river)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from models.errors import ModelError
from models.features import FeatureSpec
from models.protocol import Learner

_LEARNERS: dict[str, str] = {
    "ftrl": "models.learners.ftrl:FTRL",
}


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_LEARNERS)


def create(name: str, spec: FeatureSpec, seed: int = 0, **params: Any) -> Learner:
    """A new learner ``name`` over ``spec`` with hyper-parameters ``params``."""
    try:
        target = _LEARNERS[name]
    except KeyError:
        raise ModelError(f"learner must be one of {available()}, got {name!r}") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        inspect.signature(cls).bind(spec, seed=seed, **params)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("spec", "seed")]
        raise ModelError(
            f"parameters of learner {name!r} must be among {accepted}, got {sorted(params)}"
        ) from exc
    learner: Learner = cls(spec, seed=seed, **params)
    return learner
