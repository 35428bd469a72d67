"""Routing of the request topic: the ``model`` header, else the surface's model; a model
not served here is an error naming the served ones (never another model's answer)."""

from __future__ import annotations

import pytest

from streamlearn.serving.errors import ModelNotFound
from streamlearn.serving.requests import route
from streamlearn.streams.contracts import PredictionRequest
from tests.example import MODELS


def _req(surface: str) -> PredictionRequest:
    return PredictionRequest("r", "u", surface, ["i1"])  # type: ignore[arg-type]


def test_header_then_surface() -> None:
    served = ("feed", "ads")
    assert route(_req("ads"), None, served, MODELS) == "ads"
    assert route(_req("feed"), [], served, MODELS) == "feed"
    assert route(_req("feed"), [("model", b"ads")], served, MODELS) == "ads"
    assert route(_req("ads"), [("other", b"x"), ("model", "feed")], served, MODELS) == "feed"


def test_a_model_not_served_is_an_error_naming_the_served_ones() -> None:
    with pytest.raises(ModelNotFound, match=r"one of \['feed', 'ads'\], got 'vision'") as exc:
        route(_req("feed"), [("model", b"vision")], ("feed", "ads"), MODELS)
    assert exc.value.status == 404
    # a surface whose model is not served here: not answered by another model
    with pytest.raises(ModelNotFound, match=r"naming one of \['feed'\].*surface 'ads'"):
        route(_req("ads"), None, ("feed",), MODELS)
