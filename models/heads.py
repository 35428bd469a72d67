"""Model heads: what a model predicts, and how its examples are labelled and calibrated.

A :class:`Head` names the event types that make a shown item a positive, the label window
an impression waits for one (``None``: the joiner's default), and an optional negative
downsampling rate: negatives kept at ``negative_rate`` with the predictions corrected back
to the true rate, so a model's calibration (mean predicted / observed rate, tracked by
``ProgressiveMetrics``) stays near 1, as pricing needs. A model's head is part of its
definition (:class:`streamlearn.models.definition.ModelDef`); a project declares its
heads (``streamlearn.project``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamlearn.models.errors import ModelError


@dataclass(frozen=True, init=False)
class Head:
    """One prediction target.

    Parameters
    ----------
    name
        The head's name (models refer to it).
    positives
        Event types that make a shown item a positive example.
    window_s
        Seconds after an impression in which a positive counts (``None``: the joiner's
        default window).
    negative_rate
        Fraction of negatives learned, with the probability correction (``None``: all).
    """

    name: str
    positives: frozenset[str]
    negative_rate: float | None = None
    window_s: float | None = None

    def __init__(
        self,
        name: str,
        positives: Iterable[str],
        negative_rate: float | None = None,
        window_s: float | None = None,
    ) -> None:
        object.__setattr__(self, "name", name)
        given = (positives,) if isinstance(positives, str) else positives
        object.__setattr__(self, "positives", frozenset(given))
        object.__setattr__(self, "negative_rate", negative_rate)
        object.__setattr__(self, "window_s", window_s)
        if not self.positives:
            raise ModelError(f"head {self.name!r}: expected at least one positive event type")
        if self.negative_rate is not None and not 0.0 < self.negative_rate <= 1.0:
            raise ModelError(
                f"head {self.name!r}: expected negative_rate in (0, 1], got {self.negative_rate}"
            )
        if self.window_s is not None and self.window_s <= 0:
            raise ModelError(f"head {self.name!r}: expected window_s > 0, got {self.window_s}")
