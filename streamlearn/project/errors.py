"""The exceptions of ``streamlearn.project``: one root under
:class:`streamlearn.models.errors.StreamlearnError` (whose docstring draws the whole tree)."""

from __future__ import annotations

from streamlearn.models.errors import StreamlearnError


class ProjectError(StreamlearnError):
    """A project cannot be loaded: no definitions module, it does not run, it defines no
    ``project``, or a declaration in it is wrong (the message names which)."""

    exit_code = 2
