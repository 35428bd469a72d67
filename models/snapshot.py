"""The snapshot format: an ONNX graph, the learner state (data only), and JSON metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Keys every snapshot's metadata carries.
REQUIRED_METADATA = ("learner", "params", "feature_spec", "kind", "inputs", "output")
#: Metadata flag of a serving-only snapshot: the graph without the learner state (empty
#: ``state``): served like any version, never a point to resume training from.
SERVING_ONLY = "serving_only"


@dataclass(frozen=True)
class Snapshot:
    """A learner frozen at one point of its stream.

    ``onnx`` is the serving graph (inputs ``idx`` int64 ``[N, K]`` and ``val`` float32
    ``[N, K]``, output ``prob`` float32 ``[N]``); ``state`` is the learner's state as data
    (npz + JSON, :mod:`streamlearn.models.state`) so a trainer can resume; ``metadata`` is JSON-safe
    and holds at least :data:`REQUIRED_METADATA` (``feature_spec`` is
    ``FeatureSpec.to_dict()``; ``state_sha256`` checks ``state`` on load). A serving-only
    snapshot (:data:`SERVING_ONLY` true in the metadata) has an empty ``state``.
    """

    @property
    def serving_only(self) -> bool:
        """True when this snapshot carries no learner state (see :data:`SERVING_ONLY`)."""
        return bool(self.metadata.get(SERVING_ONLY))

    onnx: bytes
    state: bytes
    metadata: dict[str, Any] = field(default_factory=dict)
