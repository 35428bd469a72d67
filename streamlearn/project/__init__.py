"""Projects: a team's events, features and models, declared in plain Python.

A project is a directory with one definitions module, ``project.py``, that the tool loads
(``--project DIR`` on every command, or ``STREAMLEARN_PROJECT``; without either, the
built-in example). ``streamlearn init DIR`` writes a commented one that runs as it is::

    from streamlearn.project import Count, Events, Feature, Head, Model, Project

    project = Project(
        name="shop",
        events=Events(impressions=["view"], engagements=["add_to_cart", "purchase"]),
        surfaces=["home", "search"],
        features=[Feature("user_carts", "user", Count(["add_to_cart"]))],
        heads=[Head("cart", positives=["add_to_cart"])],
        models=[Model("home", head="cart", surfaces=["home", "search"])],
    )

Everything a command runs is built from it: the event contract, the topics, the feature
processor, the joiner's labels, one trainer per model, serving and its metadata.
"""

from streamlearn.models.heads import Head
from streamlearn.project.declaration import Model, Project
from streamlearn.project.errors import ProjectError
from streamlearn.project.loader import (
    BUILTIN,
    DEFINITIONS,
    builtin_root,
    is_builtin,
    load_project,
)
from streamlearn.streams.catalog.events import Entity, Events, Field
from streamlearn.streams.catalog.features import (
    Count,
    DecayedRate,
    Feature,
    LastEventTime,
    LatestContext,
    SecondsSince,
    WindowedCount,
)

__all__ = [
    "BUILTIN",
    "DEFINITIONS",
    "Count",
    "DecayedRate",
    "Entity",
    "Events",
    "Feature",
    "Field",
    "Head",
    "LastEventTime",
    "LatestContext",
    "Model",
    "Project",
    "ProjectError",
    "SecondsSince",
    "WindowedCount",
    "builtin_root",
    "is_builtin",
    "load_project",
]
