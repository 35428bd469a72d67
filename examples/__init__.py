"""Example projects shipped with streamlearn (``streamlearn.examples``).

Each folder is a project: a ``project.py`` definitions module that ``--project`` loads.
``feed_ads`` is the built-in one, used when no project is given.
"""
