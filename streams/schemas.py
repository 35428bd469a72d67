"""JSON Schemas of the record contracts, generated from the msgspec structs.

Producers in any language can validate a record against these before they publish it;
``streamlearn contracts export DIR`` writes them (draft 2020-12), one file per record,
for a project: its activity events and prediction requests take the types, surfaces and
fields it declares (``streamlearn.streams.catalog.events.EventSchema``). The structs in
``streamlearn.streams.contracts`` are the single source: the schema says what their
decoders accept (enums, lengths, ranges), and the test suite checks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.contracts import (
    ActivityEvent,
    DeadLetterHeaders,
    FeatureLogRecord,
    FeatureRecord,
    ModelUpdate,
    PredictionError,
    PredictionReply,
    PredictionRequest,
    TrainingExample,
)

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Contract:
    """One record contract (docs/reference/contracts.md): its struct and where it travels."""

    name: str
    struct: type[msgspec.Struct]
    #: the topic (without the prefix) or HTTP route that carries it
    carried_by: str
    #: the Kafka key, or "" where there is none
    key: str = ""
    #: ``value`` (the JSON message value) or ``headers`` (Kafka record headers)
    part: str = "value"


CONTRACTS: Final = (
    Contract("activity-event", ActivityEvent, "topic activity", "user_id"),
    Contract(
        "prediction-request",
        PredictionRequest,
        "HTTP POST /v1/models/{model}:predict, or topic prediction-requests",
        "user_id",
    ),
    Contract(
        "prediction-reply",
        PredictionReply,
        "the HTTP reply, and topic predictions",
        "user_id",
    ),
    Contract(
        "prediction-error",
        PredictionError,
        "topic predictions: a request from prediction-requests that could not be answered",
        "user_id",
    ),
    Contract("feature-record", FeatureRecord, "topic features", "user/<id> or item/<id>"),
    Contract("feature-log-record", FeatureLogRecord, "topic feature-log", "user_id"),
    Contract("training-example", TrainingExample, "topic training-examples.<model>", "user_id"),
    Contract("model-update", ModelUpdate, "topic model-updates", "the model name"),
    Contract(
        "dead-letter-headers",
        DeadLetterHeaders,
        "the headers of a record on topic <topic>.dlq",
        "the original key",
        part="headers",
    ),
)


def project_contracts(schema: EventSchema) -> tuple[Contract, ...]:
    """:data:`CONTRACTS` for a project: its activity events, and prediction requests on
    its surfaces."""
    request: Any = msgspec.defstruct(
        "PredictionRequest",
        [
            (
                "surface",
                Annotated[
                    Literal[tuple(schema.surfaces)],
                    Meta(description="Where the ranking is shown (a declared surface)."),
                ],
            )
        ],
        bases=(PredictionRequest,),
        frozen=True,
    )
    request.__doc__ = (
        "Ask a model to score `candidates` for `user_id` on `surface`.\n\nHTTP body of "
        "`POST /v1/models/{model}:predict`, or topic `prediction-requests` (key\n`user_id`)."
    )
    by_name = {"activity-event": schema.event_type, "prediction-request": request}
    return tuple(replace(c, struct=by_name.get(c.name, c.struct)) for c in CONTRACTS)


def json_schema(contract: Contract) -> dict[str, Any]:
    """The JSON Schema document of one contract."""
    generated = msgspec.json.schema(contract.struct)
    return {
        "$schema": DIALECT,
        "$id": f"{contract.name}.schema.json",
        "title": contract.struct.__name__,
        **generated,
        "x-streamlearn": {
            "carried-by": contract.carried_by,
            "key": contract.key,
            "part": contract.part,
        },
    }


def export(directory: Path, schema: EventSchema) -> list[Path]:
    """Write ``<name>.schema.json`` for every contract of a project into ``directory``;
    return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in project_contracts(schema):
        path = directory / f"{contract.name}.schema.json"
        doc = msgspec.json.format(msgspec.json.encode(json_schema(contract)), indent=2)
        path.write_bytes(doc + b"\n")
        written.append(path)
    return written
