"""The models of the platform, each defined once: ``feed`` and ``ads``.

Their feature spec is built from the feature declarations
(``streamlearn.streams.catalog.features``),
which is why the catalog lives here and not in ``models/`` (``models`` knows nothing of
the feature store). Everything that needs "the feed model" — the online trainer,
``streamlearn train``/``worker trainer``, ``streamlearn up``, serving's request topic,
the joiner's labels, offline training and ``eval`` — looks it up here by name.

=========  ============  ==========================  ========  ==========
model      head          positives                   surfaces  learner
=========  ============  ==========================  ========  ==========
``feed``   engagement    click, like, share,         feed      ftrl
                         conversion
``ads``    click         click (negatives kept at    ads       ftrl
                         0.25, corrected)
=========  ============  ==========================  ========  ==========
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from streamlearn.models.definition import ModelDef
from streamlearn.models.heads import CLICK, ENGAGEMENT, Head
from streamlearn.streams.catalog.features import feed_spec
from streamlearn.streams.errors import CatalogError

FEED: Final = ModelDef(
    "feed",
    ENGAGEMENT,
    feed_spec(),
    surfaces=("feed",),
    description="Ranks the feed: probability that a shown item is engaged with.",
)
ADS: Final = ModelDef(
    "ads",
    CLICK,
    feed_spec(),
    surfaces=("ads",),
    description="Ranks the ads slot: calibrated click probability (negatives downsampled).",
)


class ModelCatalog:
    """Model definitions by name (and by the surface each ranks)."""

    def __init__(self, definitions: tuple[ModelDef, ...]) -> None:
        self._defs = {d.name: d for d in definitions}
        if len(self._defs) != len(definitions):
            raise CatalogError(f"model names must be unique, got {[d.name for d in definitions]}")
        self._by_surface: dict[str, str] = {}
        for d in definitions:
            for s in d.surfaces:
                if s in self._by_surface:
                    raise CatalogError(
                        f"surface {s!r} is ranked by both {self._by_surface[s]!r} and {d.name!r}"
                    )
                self._by_surface[s] = d.name

    def __iter__(self) -> Iterator[ModelDef]:
        return iter(self._defs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    @property
    def names(self) -> tuple[str, ...]:
        """The model names, in declaration order."""
        return tuple(self._defs)

    def get(self, name: str) -> ModelDef:
        """The definition of ``name``; :class:`CatalogError` when none is declared."""
        try:
            return self._defs[name]
        except KeyError:
            raise CatalogError(f"expected a model among {list(self._defs)}, got {name!r}") from None

    def head(self, name: str) -> Head:
        """The head of ``name``; a model not declared here predicts engagement."""
        d = self._defs.get(name)
        return ENGAGEMENT if d is None else d.head

    def for_surface(self, surface: str) -> str | None:
        """The model that ranks ``surface``, or ``None``."""
        return self._by_surface.get(surface)


#: The catalog every component uses unless handed another one.
MODELS: Final = ModelCatalog((FEED, ADS))
