"""Replay bounds and record formats, without a broker."""

from __future__ import annotations

import json

import pytest

from streamlearn.offline.errors import RangeError
from streamlearn.offline.ranges import EARLIEST, LATEST, Bound, parse_bound, parse_bounds
from streamlearn.offline.records import FORMATS, RowBuffer, guess_format, resolve_format
from streamlearn.streams.errors import ContractError


def test_parse_bound_kinds() -> None:
    assert parse_bound("earliest") == EARLIEST
    assert parse_bound("latest") == LATEST
    assert parse_bound("123") == Bound("offset", 123)
    assert parse_bound("@1700000000.5") == Bound("timestamp", 1_700_000_000_500)
    assert parse_bound("2023-11-14T22:13:20Z") == Bound("timestamp", 1_700_000_000_000)
    assert parse_bound("2023-11-14T22:13:20") == Bound("timestamp", 1_700_000_000_000)
    with pytest.raises(RangeError, match="expected earliest"):
        parse_bound("yesterday")
    with pytest.raises(RangeError, match="epoch seconds"):
        parse_bound("@x")


def test_parse_bounds_per_partition() -> None:
    b = parse_bounds(["0:100", "2:@1700000000", "5"], EARLIEST)
    assert b.for_partition(0) == Bound("offset", 100)
    assert b.for_partition(2) == Bound("timestamp", 1_700_000_000_000)
    assert b.for_partition(1) == Bound("offset", 5)
    assert parse_bounds([], LATEST).for_partition(3) == LATEST
    with pytest.raises(RangeError, match="two bounds"):
        parse_bounds(["0:1", "0:2"], EARLIEST)
    with pytest.raises(RangeError, match="one bound for all"):
        parse_bounds(["1", "2"], EARLIEST)


def test_formats_decode_and_reject() -> None:
    ev = {
        "event_id": "e",
        "type": "click",
        "ts": 1.5,
        "user_id": "u",
        "item_id": "i",
        "surface": "ads",
        "request_id": "r",
        "context": {"b": 1, "a": "x"},
    }
    row = FORMATS["event"].decode(json.dumps(ev).encode())
    assert row[:3] == ("e", "click", 1.5) and row[-1] == '{"a":"x","b":1}'
    with pytest.raises(ContractError):
        FORMATS["event"].decode(b'{"type": "click"}')
    with pytest.raises(ContractError) as exc:
        FORMATS["json"].decode(b"{")
    assert exc.value.reason == "bad_json"
    ex = {
        "request_id": "r",
        "user_id": "u",
        "item_id": "i",
        "surface": "feed",
        "ts": 2.0,
        "label": 2,
        "features": {},
        "served_version": 1,
        "served_score": 0.5,
    }
    with pytest.raises(ContractError, match=r"\$\.label"):
        FORMATS["training"].decode(json.dumps(ex).encode())


def test_guess_and_resolve_format() -> None:
    assert guess_format("streamlearn.activity") == "event"
    assert guess_format("p.training-examples.feed") == "training"
    assert guess_format("p.features") == "json"
    assert resolve_format("auto", ["a.activity"]).name == "event"
    with pytest.raises(RangeError, match="different formats"):
        resolve_format("auto", ["a.activity", "a.features"])
    with pytest.raises(RangeError, match="format must be"):
        resolve_format("xml", ["t"])


def test_row_buffer_flushes_typed_batch() -> None:
    buf = RowBuffer(FORMATS["json"])
    buf.append(("t", 0, 7, 1_700_000_000_000, None), ('{"a":1}',))
    batch = buf.flush()
    assert batch.num_rows == 1 and len(buf) == 0
    assert batch.schema.names == ["topic", "partition", "offset", "timestamp", "key", "value"]
