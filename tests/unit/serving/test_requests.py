"""Routing of the request topic: the ``model`` header, else the surface's model."""

from __future__ import annotations

import pytest

from streamlearn.serving.errors import BadRequest
from streamlearn.serving.requests import route
from streamlearn.streams.contracts import PredictionRequest


def _req(surface: str) -> PredictionRequest:
    return PredictionRequest("r", "u", surface, ["i1"])  # type: ignore[arg-type]


def test_header_then_surface_then_first_served_model() -> None:
    served = ("feed", "ads")
    assert route(_req("ads"), None, served) == "ads"
    assert route(_req("feed"), [], served) == "feed"
    assert route(_req("feed"), [("model", b"ads")], served) == "ads"
    assert route(_req("ads"), [("other", b"x"), ("model", "feed")], served) == "feed"
    # a surface whose model is not served here: the first served model answers
    assert route(_req("ads"), None, ("feed",)) == "feed"
    with pytest.raises(BadRequest, match=r"among \['feed', 'ads'\], got 'vision'"):
        route(_req("feed"), [("model", b"vision")], served)
