"""A griffe extension for the Python API pages: Sphinx roles in docstrings as code.

The package's docstrings cross-reference with Sphinx roles (``:class:`~a.b.C```,
``:func:`f```, ``:data:`X```, ``:meth:`C.m```); mkdocstrings renders Markdown, where they
would show as written. Each becomes inline code of its target (``~`` keeps the last
name, as Sphinx does), and a literal block's ``::`` a colon (the indented block after
it is a code block in Markdown too).
"""

from __future__ import annotations

import re
from typing import Any, Final

import griffe

#: A reStructuredText literal block's marker ending a paragraph (``…::``).
LITERAL: Final = re.compile(r"(\S)::$", re.M)
ROLE: Final = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")


def _code(m: re.Match[str]) -> str:
    target = m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if m.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = ROLE.sub(_code, obj.docstring.value)
            obj.docstring.value = LITERAL.sub(r"\1:", text)
