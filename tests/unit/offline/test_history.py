"""A historical log's rows → a project's events, checked against its contract."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamlearn.offline.history import EventMaker, count_rows, log_id, seconds
from streamlearn.streams.errors import ContractError
from tests.unit.project.test_declaration import shop

SCHEMA = shop().schema


def test_a_row_becomes_an_event_of_the_project() -> None:
    maker = EventMaker(SCHEMA, "time", "log1")
    row = {
        "time": "2026-01-01T00:00:01Z",
        "type": "view",
        "user_id": 42,
        "item_id": "i1",
        "surface": "search",
        "query": "red shoes",
        "price": 9.5,
        "page": 2,
        "position": 3,
    }
    raw, ts, user = maker.event(row, 7)
    ev = orjson.loads(raw)
    assert ts == 1_767_225_601.0 and user == "42"
    assert ev == {
        "ts": ts,
        "type": "view",
        "user_id": "42",
        "item_id": "i1",
        "surface": "search",
        "event_id": "log1-7",
        "request_id": "log1-r7",
        "position": 3,
        "query": "red shoes",
        "price": 9.5,
        "context": {"page": 2},
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"type": "click"}, ContractError, r"expected type in \['add_to_cart', 'hide', 'view'\]"),
        ({"surface": "tv"}, ContractError, r"expected surface in \['home', 'search'\]"),
        ({"time": "yesterday"}, ValueError, "Invalid isoformat"),
        ({"time": -5}, ValueError, "at or after 1970"),
        ({"price": "cheap"}, ContractError, r"\$\.price"),
    ],
)
def test_a_row_that_is_no_event_says_why(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    maker = EventMaker(SCHEMA, "time", "log1")
    row = {"time": 1.0, "type": "view", "user_id": "u", "item_id": "i", "surface": "search"}
    with pytest.raises(error, match=message):
        maker.event({**row, **change}, 0)


def test_times_rows_and_ids(tmp_path: Path) -> None:
    assert seconds(1.5, "ts") == 1.5 and seconds("1970-01-01T00:00:10", "ts") == 10.0
    log = tmp_path / "a.csv"
    log.write_text("ts,type\n1,view\n\n2,view\n")
    assert count_rows(log) == 2
    assert log_id(log) == log_id(log) and len(log_id(log)) == 10
