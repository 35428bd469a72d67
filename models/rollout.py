"""Safe rollout: a candidate is compared with production on the same requests, promoted
or rejected by the figures, and a promotion that regresses is rolled back.

The decisions only: the online trainer (``streamlearn.streams.learning.trainer``) feeds them the
labelled examples, and carries them out in the registry (:mod:`streamlearn.models.stages`).

* :class:`Comparison`: a candidate scored as a shadow beside production. Each labelled
  example carries both scores; once ``min_examples`` have joined, the candidate is
  promoted when its NE is at most production's minus ``promote_margin``, else rejected.
  Both NEs are over the same examples (the same base rate), so the comparison is fair.
* :class:`Watch`: after a promotion, the NE of the promoted lineage on the traffic it
  serves is watched for ``watch_examples`` labelled examples; above the NE production had
  in the comparison plus ``rollback_margin``, it is rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamlearn.models.errors import ModelError
from streamlearn.models.evaluation import ScoreTally


@dataclass(frozen=True)
class RolloutConfig:
    """Thresholds of the automatic rollout (settings: ``streamlearn train --rollout-…``)."""

    #: Compare candidates and watch promotions at all.
    enabled: bool = True
    #: Labelled examples scored by both the candidate and production before deciding.
    min_examples: int = 2000
    #: Promote when the candidate's NE <= production's NE - this (else reject).
    promote_margin: float = 0.0
    #: Labelled examples served by a promoted lineage before it is kept for good.
    watch_examples: int = 2000
    #: Roll back when the promoted lineage's NE > production's NE in the comparison + this.
    rollback_margin: float = 0.02

    def __post_init__(self) -> None:
        if self.min_examples < 1 or self.watch_examples < 1:
            raise ModelError(
                "min_examples and watch_examples must be >= 1, got "
                f"{self.min_examples} and {self.watch_examples}"
            )


@dataclass(frozen=True)
class Decision:
    """What to do with a candidate or a promotion, and the figures it rests on."""

    action: Literal["promote", "reject", "rollback", "keep"]
    reason: str
    figures: dict[str, Any]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass
class Comparison:
    """A candidate lineage (shadow) against production on the same labelled requests."""

    #: the candidate version the comparison started with (its root)
    candidate: int
    shadow: ScoreTally = field(default_factory=ScoreTally)
    production: ScoreTally = field(default_factory=ScoreTally)

    def add(self, y: np.ndarray, production: np.ndarray, shadow: np.ndarray) -> None:
        """Examples with their label, production's score and the candidate's score."""
        self.production.update(y, production)
        self.shadow.update(y, shadow)

    def figures(self) -> dict[str, Any]:
        """Examples compared and both sides' NE, AUC, log loss and calibration."""
        out: dict[str, Any] = {"candidate": self.candidate, "examples": self.shadow.count}
        for side, t in (("candidate", self.shadow), ("production", self.production)):
            for k in ("ne", "auc", "logloss", "calibration"):
                out[f"{side}_{k}"] = _r(getattr(t, k))
        return out

    def decide(self, config: RolloutConfig) -> Decision | None:
        """``promote`` or ``reject`` once ``min_examples`` have joined, else ``None``."""
        if self.shadow.count < config.min_examples:
            return None
        fig = self.figures()
        cand, prod = self.shadow.ne, self.production.ne
        if cand is None or prod is None:
            if self.shadow.count < 10 * config.min_examples:
                return None  # one class only so far: NE undefined, wait a little more
            return Decision("reject", "NE undefined (one class only)", fig)
        if cand <= prod - config.promote_margin:
            why = f"NE {cand:.4f} <= production's {prod:.4f} - {config.promote_margin}"
            return Decision("promote", why, fig)
        why = f"NE {cand:.4f} > production's {prod:.4f} - {config.promote_margin}"
        return Decision("reject", why, fig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "candidate": self.candidate,
            "shadow": self.shadow.to_dict(),
            "production": self.production.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(data["candidate"]),
            ScoreTally.from_dict(data["shadow"]),
            ScoreTally.from_dict(data["production"]),
        )


@dataclass
class Watch:
    """A promoted lineage on probation: its served NE against the reference."""

    #: the version promoted
    promoted: int
    #: production before the promotion (what a rollback returns to)
    previous: int | None
    #: the first version the promoted lineage published after the promotion
    since_version: int
    #: production's NE in the comparison that promoted it
    reference_ne: float
    served: ScoreTally = field(default_factory=ScoreTally)
    #: the newest full version (with its learner state) of the lineage it replaced: where
    #: a restarted trainer reloads the fallback from
    fallback_version: int | None = None

    def covers(self, served_version: np.ndarray) -> np.ndarray:
        """Which examples the promoted lineage served."""
        v = np.asarray(served_version)
        return (v == self.promoted) | (v >= self.since_version)

    def decide(self, config: RolloutConfig) -> Decision | None:
        """``rollback`` or ``keep`` once ``watch_examples`` have joined, else ``None``."""
        if self.served.count < config.watch_examples:
            return None
        ne = self.served.ne
        fig = {
            "promoted": self.promoted,
            "previous": self.previous,
            "examples": self.served.count,
            "ne": _r(ne),
            "auc": _r(self.served.auc),
            "reference_ne": _r(self.reference_ne),
        }
        limit = self.reference_ne + config.rollback_margin
        if ne is not None and ne > limit:
            why = (
                f"NE {ne:.4f} after promotion > {self.reference_ne:.4f} + {config.rollback_margin}"
            )
            return Decision("rollback", why, fig)
        return Decision("keep", f"NE {ne} within {limit:.4f}", fig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "promoted": self.promoted,
            "previous": self.previous,
            "since_version": self.since_version,
            "reference_ne": self.reference_ne,
            "served": self.served.to_dict(),
            "fallback_version": self.fallback_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Watch:
        """Inverse of :meth:`to_dict`."""
        prev = data.get("previous")
        fallback = data.get("fallback_version")
        return cls(
            int(data["promoted"]),
            None if prev is None else int(prev),
            int(data["since_version"]),
            float(data["reference_ne"]),
            ScoreTally.from_dict(data["served"]),
            None if fallback is None else int(fallback),
        )
