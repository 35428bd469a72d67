"""A historical log's rows → a project's events, checked against its contract; a CSV's
typed columns read as their declared types, never guessed from the text."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamlearn.offline.history import EventMaker, count_rows, log_id, seconds, typed
from streamlearn.offline.produce import read_records
from streamlearn.project import Events, Field, Project
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


CSV_PROJECT = Project(
    name="shop",
    events=Events(impressions=["view"], engagements=["buy"]),
    surfaces=["search"],
    fields=[
        Field("code", "str"),
        Field("quantity", "int"),
        Field("price", "float"),
        Field("gift", "bool"),
    ],
)


def _csv_events(tmp_path: Path, text: str) -> list[dict[str, object]]:
    log = tmp_path / "log.csv"
    log.write_text(text)
    maker = EventMaker(CSV_PROJECT.schema, "ts", "L", text=True)
    return [orjson.loads(maker.event(r, n)[0]) for n, r in enumerate(read_records(log, False))]


def test_csv_cells_of_typed_columns_are_read_as_their_types(tmp_path: Path) -> None:
    (ev,) = _csv_events(
        tmp_path,
        "ts,type,user_id,item_id,surface,request_id,position,code,quantity,price,gift,shelf,note\n"
        "1767225600.5,view,007,1e3,search,0042,2,12345678,3,9.5,true,12,1e5x\n",
    )
    # ids and a declared string field keep their text (not 7, 1000.0, 12345678)
    assert ev["user_id"] == "007" and ev["item_id"] == "1e3" and ev["request_id"] == "0042"
    assert ev["code"] == "12345678"
    assert ev["ts"] == 1767225600.5 and ev["position"] == 2
    assert ev["quantity"] == 3 and ev["price"] == 9.5 and ev["gift"] is True
    # the rest is context: a cell that reads as a number is one
    assert ev["context"] == {"shelf": 12, "note": "1e5x"}


def test_iso_times_and_a_context_column_of_json(tmp_path: Path) -> None:
    (ev,) = _csv_events(
        tmp_path,
        "ts,type,user_id,item_id,surface,context\n"
        '2026-01-01T00:00:01+00:00,buy,u,i,search,"{""a"": 1}"\n',
    )
    assert ev["ts"] == 1767225601.0 and ev["context"] == {"a": 1}


def test_a_cell_that_is_not_its_declared_type_names_the_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected int in column 'quantity', got 'three'"):
        _csv_events(tmp_path, "ts,type,user_id,item_id,surface,quantity\n1,view,u,i,search,three\n")
    with pytest.raises(ValueError, match="expected bool"):
        typed("maybe", "bool", "gift")


def test_typed_values_of_other_sources() -> None:
    assert typed(12, "str", "code") == "12"
    assert typed(3.0, "int", "quantity") == 3  # a column of ints with gaps, as floats
    assert typed(2.5, "int", "quantity") == 2.5  # left for the contract to refuse
    assert typed(False, "bool", "gift") is False
