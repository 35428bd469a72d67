"""The exported JSON Schemas, checked with a real validator (jsonschema) and against the
msgspec decoders they are generated from: both accept the same valid record and both
reject the same invalid ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from typer.testing import CliRunner

from streamlearn.cli.root import app
from streamlearn.streams.contracts import DeadLetterHeaders, decode, decode_request
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.dead_letters import DeadLetters
from streamlearn.streams.schemas import Contract, export, json_schema, project_contracts
from tests.example import SCHEMA, decode_event

REPO = Path(__file__).resolve().parents[3]

VALID: dict[str, dict[str, Any]] = {
    "activity-event": {
        "event_id": "e1",
        "type": "click",
        "ts": 1764000000.5,
        "user_id": "u1",
        "item_id": "i1",
        "surface": "feed",
        "request_id": "r1",
        "position": 2,
        "context": {"category": "c3", "price": 9.5},
        "extra_field_is_ignored": True,
    },
    "prediction-request": {
        "request_id": "r1",
        "user_id": "u1",
        "surface": "ads",
        "candidates": ["i1", "i2"],
    },
    "prediction-reply": {"request_id": "r1", "model": "feed", "version": 3, "scores": [0.1, 0.7]},
    "prediction-error": {
        "request_id": "r1",
        "error": "expected a model among ['feed'], got 'ads'",
        "status": 404,
        "models": ["feed"],
    },
    "feature-record": {
        "entity": "item",
        "id": "i1",
        "values": {"item_ctr": 0.05, "item_category": "c3", "_clicks": 4},
        "ts": 1.0,
    },
    "feature-log-record": {
        "request_id": "r1",
        "user_id": "u1",
        "surface": "feed",
        "ts": 1.0,
        "model": "feed",
        "version": 1,
        "items": [{"item_id": "i1", "features": {"user_ctr": 0.1, "item_id": "i1"}, "score": 0.2}],
    },
    "training-example": {
        "request_id": "r1",
        "user_id": "u1",
        "item_id": "i1",
        "surface": "feed",
        "ts": 1.0,
        "label": 1,
        "features": {"user_ctr": 0.1},
        "served_version": 2,
        "served_score": 0.3,
    },
    "model-update": {"model": "feed", "version": 4, "created_at": 2.0, "kind": "stage"},
    "dead-letter-headers": {
        "error": "expected JSON: malformed",
        "error.reason": "bad_json",
        "source.topic": "streamlearn.activity",
        "source.partition": "3",
        "source.offset": "1207",
    },
}

#: (what is wrong, the change) — each one alone makes the valid record invalid
INVALID: dict[str, list[tuple[str, dict[str, Any] | str]]] = {
    "activity-event": [
        ("unknown type", {"type": "teleport"}),
        ("unknown surface", {"surface": "tv"}),
        ("empty user id", {"user_id": ""}),
        ("ts as text", {"ts": "yesterday"}),
        ("negative position", {"position": -1}),
        ("missing item_id", "item_id"),
    ],
    "prediction-request": [
        ("no candidates", {"candidates": []}),
        ("candidates not a list", {"candidates": "i1"}),
        ("unknown surface", {"surface": "tv"}),
    ],
    "prediction-reply": [("version 0", {"version": 0}), ("missing scores", "scores")],
    "prediction-error": [("status 200", {"status": 200}), ("missing error", "error")],
    "feature-record": [("values a list", {"values": []})],
    "feature-log-record": [
        ("score above 1", {"items": [{"item_id": "i1", "features": {}, "score": 1.5}]}),
        ("missing items", "items"),
    ],
    "training-example": [("label 2", {"label": 2}), ("score below 0", {"served_score": -0.1})],
    "model-update": [("unknown kind", {"kind": "deleted"}), ("version as text", {"version": "4"})],
    "dead-letter-headers": [
        ("unknown reason", {"error.reason": "gremlins"}),
        ("offset not a number", {"source.offset": "-x"}),
        ("missing source topic", "source.topic"),
    ],
}

CONTRACTS = project_contracts(SCHEMA)
BY_NAME = {c.name: c for c in CONTRACTS}


def _decode(name: str, record: dict[str, Any]) -> object:
    """Decode as the consumers of the record do (requests and events add checks)."""
    raw = json.dumps(record).encode()
    if name == "prediction-request":
        return decode_request(raw, surfaces=SCHEMA.surfaces)
    if name == "activity-event":
        return decode_event(raw)
    return decode(BY_NAME[name].struct, raw)


def _broken(name: str, change: dict[str, Any] | str) -> dict[str, Any]:
    record = dict(VALID[name])
    if isinstance(change, str):
        del record[change]
    else:
        record.update(change)
    return record


def _validator(contract: Contract) -> jsonschema.protocols.Validator:
    schema = json_schema(contract)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # the document itself is a valid draft 2020-12 schema
    return cls(schema)  # type: ignore[no-any-return]


def test_every_readme_contract_has_a_schema_and_test_records() -> None:
    assert set(BY_NAME) == set(VALID) == set(INVALID)
    assert len(BY_NAME) == 9


@pytest.mark.parametrize("name", sorted(VALID))
def test_schema_and_decoder_accept_a_valid_record(name: str) -> None:
    contract = BY_NAME[name]
    _validator(contract).validate(VALID[name])
    _decode(name, VALID[name])


@pytest.mark.parametrize(
    ("name", "what", "change"),
    [(name, what, change) for name, cases in INVALID.items() for what, change in cases],
)
def test_schema_and_decoder_reject_an_invalid_record(
    name: str, what: str, change: dict[str, Any] | str
) -> None:
    contract = BY_NAME[name]
    record = _broken(name, change)
    errors = list(_validator(contract).iter_errors(record))
    assert errors, f"the schema accepted a record with {what}"
    with pytest.raises(ContractError):
        _decode(name, record)


def test_the_decoder_accepts_what_the_schema_does_for_integers_as_floats() -> None:
    """A JSON integer is a valid ``number``: both sides take ``"ts": 1``."""
    record = {**VALID["activity-event"], "ts": 1}
    _validator(BY_NAME["activity-event"]).validate(record)
    _decode("activity-event", record)


class _FakeMessage:
    def topic(self) -> str:
        return "streamlearn.activity"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def key(self) -> bytes:
        return b"u1"

    def value(self) -> bytes:
        return b"not json"


class _RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, **kw})


def test_dead_letters_write_the_headers_the_schema_describes() -> None:
    producer = _RecordingProducer()
    DeadLetters(producer).send(_FakeMessage(), "bad_json", "expected JSON")  # type: ignore[arg-type]
    (sent,) = producer.sent
    headers = {k: v.decode() for k, v in sent["headers"]}
    _validator(BY_NAME["dead-letter-headers"]).validate(headers)
    assert msgspec.convert(headers, DeadLetterHeaders).source_offset == "41"
    assert (sent["topic"], sent["key"], sent["value"]) == (
        "streamlearn.activity.dlq",
        b"u1",
        b"not json",
    )


def test_cli_exports_one_file_per_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["contracts", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(f"{c.name}.schema.json" for c in CONTRACTS)
    doc = json.loads((tmp_path / "out" / "training-example.schema.json").read_text())
    assert doc["$schema"].endswith("draft/2020-12/schema")
    assert doc["$defs"]["TrainingExample"]["properties"]["label"]["enum"] == [0, 1]


def test_the_committed_schemas_are_current(tmp_path: Path) -> None:
    """``contracts/`` holds the exported schemas for readers who do not install us."""
    export(tmp_path, SCHEMA)
    for path in sorted(tmp_path.iterdir()):
        committed = REPO / "contracts" / path.name
        assert committed.exists() and committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run `streamlearn contracts export contracts/`"
        )
    assert {p.name for p in (REPO / "contracts").glob("*.schema.json")} == {
        p.name for p in tmp_path.iterdir()
    }
