"""Declaring a project: what it compiles into, and one error line for what is wrong."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from streamlearn.project import (
    Count,
    Entity,
    Events,
    Feature,
    Field,
    Head,
    Model,
    Project,
    ProjectError,
    WindowedCount,
)
from streamlearn.streams.errors import ContractError


def shop(**changes: Any) -> Project:
    """A small project of its own; ``changes`` replace its declarations."""
    base: dict[str, Any] = {
        "name": "shop",
        "events": Events(impressions=["view"], engagements=["add_to_cart"], negatives=["hide"]),
        "surfaces": ["search", "home"],
        "fields": [Field("query", "str"), Field("price", float)],
        "entities": [Entity("query", key="query")],
        "features": [
            Feature("query_carts", "query", Count(["add_to_cart"])),
            Feature("item_views_1h", "item", WindowedCount(["view"], 3600)),
        ],
        "heads": [Head("cart", positives=["add_to_cart"], window_s=20.0)],
        "models": [
            Model(
                "search",
                head="cart",
                surfaces=["search"],
                features=["query", "item_id", "query_carts", "item_views_1h", "ctx_page"],
                crosses=[("query", "item_id")],
            )
        ],
    }
    return Project(**{**base, **changes})


def test_a_project_compiles_into_its_contract_features_and_models() -> None:
    p = shop()
    assert p.schema.types == {"view", "add_to_cart", "hide"}
    assert p.schema.entity_keys == {"user": "user_id", "item": "item_id", "query": "query"}
    assert p.catalog.entities == ("item", "query")
    m = p.model_catalog.get("search")
    assert m.head.positives == {"add_to_cart"} and m.head.window_s == 20.0
    assert m.spec.categorical == ("query", "item_id", "ctx_page")
    assert m.spec.numeric == ("query_carts", "item_views_1h")
    assert p.model_catalog.for_surface("search") == "search"
    assert p.model_catalog.for_surface("home") is None


def test_its_events_decode_with_the_declared_types_surfaces_and_fields() -> None:
    schema = shop().schema
    ev = schema.decode(
        msgspec.json.encode(
            {
                "event_id": "e",
                "type": "add_to_cart",
                "ts": 1.0,
                "user_id": "u",
                "item_id": "i",
                "surface": "search",
                "request_id": "r",
                "query": "red shoes",
                "price": 12.5,
            }
        )
    )
    assert (ev.type, ev.query, ev.price) == ("add_to_cart", "red shoes", 12.5)  # type: ignore[attr-defined]
    good = {"event_id": "e", "ts": 1.0, "user_id": "u", "item_id": "i", "request_id": "r"}
    with pytest.raises(ContractError, match=r"expected type in \['add_to_cart', 'hide', 'view'\]"):
        schema.decode(msgspec.json.encode({**good, "type": "click", "surface": "search"}))
    with pytest.raises(ContractError, match=r"expected surface in \['home', 'search'\]"):
        schema.decode(msgspec.json.encode({**good, "type": "view", "surface": "feed"}))
    with pytest.raises(ContractError, match=r"Expected `str \| null`, got `int` - at `\$.query`"):
        schema.decode(msgspec.json.encode({**good, "type": "view", "surface": "home", "query": 3}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"models": [Model("search", head="cart", features=["query_clicks"])]},
            "project 'shop': model 'search': input 'query_clicks' is not a declared feature",
        ),
        (
            {"features": [Feature("query_carts", "query", Count(["add_to_kart"]))]},
            r"feature 'query_carts': expected event types among \['add_to_cart', 'hide', 'view'\]",
        ),
        (
            {"heads": [Head("cart", positives=["hide"])]},
            r"head 'cart': expected positives among the engagement types \['add_to_cart'\]",
        ),
        (
            {"models": [Model("search", head="cart", surfaces=["tv"])]},
            r"model 'search': expected surfaces among \['search', 'home'\]",
        ),
        (
            {"models": [Model("search", head="click")]},
            r"model 'search': expected a head among \['cart'\], got 'click'",
        ),
        (
            {"models": [Model("search", head="cart", learner="svm")]},
            "model 'search': expected a learner among",
        ),
        (
            {"models": [Model("search", head="cart", params={"alpah": 0.1})]},
            "parameters of learner 'ftrl' must be among",
        ),
        (
            {"models": [Model("search", head="cart", features=["item_id"], crosses=[("query",)])]},
            "model 'search': a cross needs two or more of its categorical inputs",
        ),
        (
            {"entities": [Entity("query", key="q")]},
            "entity 'query': expected its key to be a declared string field",
        ),
        (
            {"events": Events(impressions=["view"], engagements=["view"])},
            "event type 'view': declared in both impressions and engagements",
        ),
        ({"surfaces": []}, "surfaces: expected at least one surface"),
        (
            {
                "models": [
                    Model("a", head="cart", surfaces=["search"]),
                    Model("b", head="cart", surfaces=["search"]),
                ]
            },
            "model 'b': surface 'search' is already ranked by 'a'",
        ),
        (
            {"features": [Feature("clicks", "user", Count(["view"]))]},
            "feature 'clicks': expected a lower_snake_case name starting with 'user_'",
        ),
    ],
)
def test_a_bad_declaration_is_one_line_naming_it(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ProjectError, match=message) as err:
        shop(**changes)
    assert "\n" not in str(err.value)


def test_removing_a_feature_a_model_uses_is_an_error_not_a_zero() -> None:
    p = shop()
    kept = [f for f in p.features if f.name != "query_carts"]
    with pytest.raises(ProjectError, match="input 'query_carts' is not a declared feature"):
        dataclasses.replace(p, features=kept)
    unserved = [dataclasses.replace(f, served=False) for f in p.features]
    with pytest.raises(ProjectError, match="feature 'query_carts' is not a model input"):
        dataclasses.replace(p, features=unserved)


def test_a_model_without_inputs_reads_every_key_and_served_feature() -> None:
    p = shop(models=[Model("search", head="cart", surfaces=["search"])])
    spec = p.model_catalog.get("search").spec
    assert spec.categorical == ("user_id", "item_id", "query", "surface")
    assert spec.numeric == ("query_carts", "item_views_1h")
