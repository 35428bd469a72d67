"""The project the simulator drives: the built-in example (``examples/feed_ads``) only.

The simulator's worlds, surfaces and behaviour are written for that project's events
(impressions, clicks, likes, shares, conversions, hides), surfaces and models; another
project is fed by its own producers or a log (``streamlearn produce --log``).
"""

from __future__ import annotations

from functools import cache

from streamlearn.project import Project, load_project


@cache
def example() -> Project:
    """The built-in example project."""
    return load_project()


def surface_models() -> tuple[str, str]:
    """The example's models of its two surfaces: the feed's and the ads slot's."""
    catalog = example().model_catalog
    feed, ads = catalog.for_surface("feed"), catalog.for_surface("ads")
    assert feed is not None and ads is not None, "the example ranks both surfaces"
    return feed, ads
