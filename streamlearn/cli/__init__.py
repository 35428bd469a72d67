"""The ``streamlearn`` command line (:mod:`streamlearn.cli.root`), the root command group; its
commands
(:mod:`streamlearn.cli.commands`), the flags they share (:mod:`streamlearn.cli.options`),
what only the edge reads from the environment (:mod:`streamlearn.cli.settings`) and the
console glue (:mod:`streamlearn.cli.ui`)."""

from streamlearn.cli.root import app, main

__all__ = ["app", "main"]
