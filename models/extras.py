"""The extras: optional parts of the install, and how code that needs one asks for it.

The core install runs the streams, the online trainer (``ftrl``, ``fm``), serving, the
simulator and ``streamlearn up``. Code that needs more calls :func:`require` before its
first import of it, and the user reads one line naming the extra to install; a
``ModuleNotFoundError`` of an extra's module that reaches the CLI anyway is answered the
same way (:func:`missing_extra`, used by ``streamlearn.cli.ui.ErrorMapping``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from streamlearn.models.errors import MissingExtra

#: Each extra → the top-level modules it installs (``pyproject.toml`` lists the
#: distributions; ``tests/unit/test_packaging.py`` checks the two agree). ``all``, ``dev``
#: and ``docs`` are not here: they are tools, and no module of the package imports them.
EXTRAS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "deep": ("torch",),
        "ranks": ("torch",),
        "vision": ("torch", "PIL", "sklearn"),
        "flow": ("ray", "matplotlib"),
        "faust": ("faust",),
        "river": ("river",),
    }
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def require(extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` is installed.

    Parameters
    ----------
    extra
        A key of :data:`EXTRAS`.
    needed_by
        What needs it, as the error line starts (``"the 'deep' learner"``).
    """
    missing = tuple(m for m in EXTRAS[extra] if not _installed(m))
    if missing:
        raise MissingExtra(extra, needed_by, missing)


def missing_extra(exc: ModuleNotFoundError, needed_by: str) -> MissingExtra | None:
    """The :class:`MissingExtra` a failed import means, or ``None`` when the module
    belongs to no extra (a broken install: let it surface as it is)."""
    top = (exc.name or "").partition(".")[0]
    for extra, modules in EXTRAS.items():  # the narrowest extra first: torch is ``deep``
        if top in modules:
            return MissingExtra(extra, needed_by, (top,))
    return None
