"""A project's models by name and by the surface each ranks.

Everything that needs "a model" (the online trainer, ``streamlearn train``, ``up``,
serving's request topic, the joiner's labels, offline training and ``eval``) looks its
definition up here by name. The definitions come from a project (``streamlearn.project``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from streamlearn.models.definition import ModelDef
from streamlearn.models.heads import Head
from streamlearn.streams.errors import CatalogError


class ModelCatalog:
    """Model definitions by name (and by the surface each ranks)."""

    def __init__(self, definitions: Iterable[ModelDef]) -> None:
        defs = tuple(definitions)
        self._defs = {d.name: d for d in defs}
        if len(self._defs) != len(defs):
            names = [d.name for d in defs]
            dup = next(n for n in names if names.count(n) > 1)
            raise CatalogError(f"model {dup!r}: declared twice")
        self._by_surface: dict[str, str] = {}
        for d in defs:
            for s in d.surfaces:
                if s in self._by_surface:
                    raise CatalogError(
                        f"model {d.name!r}: surface {s!r} is already ranked by "
                        f"{self._by_surface[s]!r} (a surface is ranked by one model)"
                    )
                self._by_surface[s] = d.name

    def __iter__(self) -> Iterator[ModelDef]:
        return iter(self._defs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __len__(self) -> int:
        return len(self._defs)

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

    def head(self, name: str) -> Head | None:
        """The head of ``name``, or ``None`` when no such model is declared."""
        d = self._defs.get(name)
        return None if d is None else d.head

    def for_surface(self, surface: str) -> str | None:
        """The model that ranks ``surface``, or ``None``."""
        return self._by_surface.get(surface)

    def only(self, name: str | None) -> ModelDef:
        """``name``'s definition, or the only model's when ``name`` is ``None``."""
        if name is not None:
            return self.get(name)
        if len(self._defs) == 1:
            return next(iter(self._defs.values()))
        raise CatalogError(f"expected a model name among {list(self._defs)} (--model), got none")
