"""One model definition: what a model is, in one place.

A :class:`ModelDef` names a model and says what it predicts (its
:class:`~streamlearn.models.heads.Head`:
positives, negative downsampling), which features it reads (a
:class:`~streamlearn.models.features.FeatureSpec`), which learner learns it with which
hyper-parameters, and which request surfaces it ranks. The online trainer, ``streamlearn
train``/``worker trainer``, the supervisor (``streamlearn up``), offline training and
``eval`` all build their learner with :meth:`ModelDef.create`, so a model is assembled
once. A project declares its models (``streamlearn.project``), which compiles them into
these definitions; this module only knows the shape.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.heads import Head
from streamlearn.models.protocol import Learner
from streamlearn.models.zoo import DEFAULT_LEARNER, create

#: Model names become topic names (``training-examples.<model>``) and registry folders.
MODEL_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ModelDef:
    """A model: name, head, feature spec, learner and its parameters, surfaces."""

    name: str
    head: Head
    spec: FeatureSpec
    learner: str = DEFAULT_LEARNER
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Request surfaces this model ranks: a request on the request topic that does not
    #: name its model goes to the model of its surface.
    surfaces: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not MODEL_NAME.match(self.name):
            raise ModelError(
                f"model name must match {MODEL_NAME.pattern} (letters, digits, _ . -), "
                f"got {self.name!r}"
            )
        object.__setattr__(self, "params", dict(self.params))

    def create(self, seed: int = 0) -> Learner:
        """A new learner for this model (downsampled and corrected where the head says)."""
        return create(
            self.learner, self.spec, seed=seed, negative_rate=self.head.negative_rate, **self.params
        )

    def with_learner(
        self, learner: str | None = None, params: Mapping[str, Any] | None = None
    ) -> ModelDef:
        """The same model learnt by ``learner`` with ``params`` (``None``: keep them).

        A new learner name starts from its own defaults: the definition's params belong
        to its learner."""
        if learner is not None and learner != self.learner:
            base: Mapping[str, Any] = {}
        else:
            base = self.params
        return dataclasses.replace(
            self,
            learner=learner or self.learner,
            params={**base, **(params or {})},
        )

    def with_spec(self, spec: FeatureSpec) -> ModelDef:
        """The same model over another feature spec (tests, narrower experiments)."""
        return dataclasses.replace(self, spec=spec)

    def info(self) -> dict[str, Any]:
        """The definition as JSON-safe data (``streamlearn models defs``, metadata)."""
        return {
            "name": self.name,
            "head": self.head.name,
            "positives": sorted(self.head.positives),
            "negative_rate": self.head.negative_rate,
            "learner": self.learner,
            "params": dict(self.params),
            "surfaces": list(self.surfaces),
            "feature_spec": self.spec.to_dict(),
            "description": self.description,
        }
