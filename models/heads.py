"""Model heads: what a model predicts, and how it is trained and calibrated.

:data:`ENGAGEMENT` (the ``feed`` model) predicts a click, like, share or conversion.
:data:`CLICK` (the ``ads`` model) predicts a click and is trained with negative
downsampling (negatives kept at ``negative_rate``), its predictions corrected back to the
true rate, so its calibration (mean predicted / observed rate, tracked by
``ProgressiveMetrics``) stays near 1 — what ad pricing needs.
A model's head is part of its definition (:class:`streamlearn.models.definition.ModelDef`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Head:
    """One prediction target."""

    name: str
    #: Event types that make a shown item a positive example.
    positives: frozenset[str]
    #: Fraction of negatives learned (with the probability correction); None: all.
    negative_rate: float | None = None


#: Engagement: a click, like, share or conversion is a positive (the ``feed`` model).
ENGAGEMENT: Final = Head("engagement", frozenset({"click", "like", "share", "conversion"}))
#: A click, with negatives kept at 0.25 and the correction applied (the ``ads`` model).
CLICK: Final = Head("click", frozenset({"click"}), negative_rate=0.25)
