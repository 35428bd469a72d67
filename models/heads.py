"""Model heads: what a model predicts, and how it is trained and calibrated.

``feed`` predicts engagement (a click, like, share or conversion). ``ads`` predicts a
click and is trained with negative downsampling (negatives kept at ``negative_rate``),
its predictions corrected back to the true rate, so its calibration (mean predicted /
observed rate, tracked by ``ProgressiveMetrics``) stays near 1 — what ad pricing needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from models.features import FeatureSpec
from models.protocol import Learner
from models.zoo import create


@dataclass(frozen=True)
class Head:
    """One prediction target."""

    name: str
    #: Event types that make a shown item a positive example.
    positives: frozenset[str]
    #: Fraction of negatives learned (with the probability correction); None: all.
    negative_rate: float | None = None


HEADS: Final[dict[str, Head]] = {
    "feed": Head("feed", frozenset({"click", "like", "share", "conversion"})),
    "ads": Head("ads", frozenset({"click"}), negative_rate=0.25),
}


def head(model: str) -> Head:
    """The head of ``model``; a model without a declared head predicts engagement."""
    return HEADS.get(model, Head(model, HEADS["feed"].positives))


def create_for(
    model: str, learner: str, spec: FeatureSpec, seed: int = 0, **params: Any
) -> Learner:
    """A learner for ``model``'s head (downsampled and corrected where the head says)."""
    return create(learner, spec, seed=seed, negative_rate=head(model).negative_rate, **params)
