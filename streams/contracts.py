"""The data contracts of streamlearn, as msgspec structs.

msgspec decodes and type-checks a JSON event in ~0.3 µs, ~8× faster than ``json`` + hand
validation, and gives precise error messages. Every ``decode_*`` function here raises
``ContractError`` (with a short ``reason`` code used in dead-letter headers and metrics)
and nothing else, whatever the bytes: ``tests/unit/streams/test_contracts_fuzz.py`` checks
that with hypothesis. What they accept is safe downstream: numbers fit in 64 bits (JSON
allows any size; a 400-digit integer overflowed ``float()`` in the featuriser), labels are
0 or 1, and model names, which become topic names, are valid ones.

The structs are also the source of the JSON Schemas that ``streamlearn contracts export``
writes (``streamlearn.streams.schemas``): enums are ``Literal`` types and constraints are
``msgspec.Meta`` annotations, which the decoder enforces in C as it decodes, so the
schema and the decoder cannot disagree. A constraint the decoder checks in Python (to
keep its error message) is added to the schema only, with ``extra_json_schema``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence
from functools import cache
from operator import attrgetter
from typing import Annotated, Any, Final, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta

from streamlearn.streams.errors import ContractError

UpdateKind = Literal["published", "stage"]
#: ``error.reason`` codes of dead letters (and ``ContractError.reason``).
DeadLetterReason = Literal[
    "bad_json",
    "missing_value",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "invalid_value",
    "oversize",
    "processing_error",
]

MAX_EVENT_BYTES: Final = 64 * 1024

Scalar = str | int | float

NonEmpty = Annotated[str, Meta(min_length=1)]
Timestamp = Annotated[float, Meta(ge=0, description="Epoch seconds (UTC).")]
Version = Annotated[int, Meta(ge=1, description="Model version in the registry (from 1).")]
Probability = Annotated[float, Meta(ge=0, le=1)]
Context = Annotated[
    dict[str, Scalar],
    Meta(description="Free-form request context; `category` sets the item's category."),
]
Features = Annotated[
    dict[str, Scalar],
    Meta(description="Raw features exactly as scored, by name (strings and numbers)."),
]


class ActivityEvent(msgspec.Struct, frozen=True):
    """One user action. Topic `activity`, key `user_id`. Unknown extra fields are ignored.

    A project's events decode to a subclass built from its declarations
    (``streamlearn.streams.catalog.events.EventSchema``): ``type`` and ``surface`` are
    among the declared values, and the declared fields are added.
    """

    event_id: Annotated[str, Meta(description="Unique id of the event (for de-duplication).")]
    type: Annotated[str, Meta(description="What the user did (a declared event type).")]
    ts: Timestamp
    user_id: NonEmpty
    item_id: NonEmpty
    surface: Annotated[str, Meta(description="Where the item was shown (a declared surface).")]
    request_id: Annotated[
        str, Meta(description="The prediction request that showed the item (joins labels).")
    ]
    position: Annotated[int, Meta(ge=0, description="Rank at which the item was shown.")] | None = (
        None
    )
    context: Context | None = None


class PredictionRequest(msgspec.Struct, frozen=True):
    """Ask a model to score `candidates` for `user_id` on `surface`.

    HTTP body of `POST /v1/models/{model}:predict`, or topic `prediction-requests` (key
    `user_id`).
    """

    request_id: str
    user_id: str
    surface: Annotated[str, Meta(description="Where the ranking is shown (a declared surface).")]
    #: ``minItems`` is checked by ``decode_request`` (for its error message).
    candidates: Annotated[
        list[str],
        Meta(description="Item ids to score, in any order.", extra_json_schema={"minItems": 1}),
    ]
    context: Context | None = None


class PredictionReply(msgspec.Struct, frozen=True):
    """Scores in the order of the request's candidates (HTTP reply; topic `predictions`)."""

    request_id: str
    model: str
    version: Version
    scores: Annotated[list[float], Meta(description="Score per candidate, in order.")]


class PredictionError(msgspec.Struct, frozen=True):
    """A request from `prediction-requests` that could not be answered (topic
    `predictions`, key `user_id`, beside the replies: an `error` field and the Kafka
    header `error.status` tell it from a reply)."""

    request_id: str
    error: Annotated[str, Meta(description="What was expected and what was got.")]
    status: Annotated[
        int,
        Meta(
            ge=400,
            le=599,
            description="The HTTP status the same request gets: 404 (model not served "
            "here), 503 (no version loaded yet: retry), 400 (malformed).",
        ),
    ]
    models: Annotated[list[str], Meta(description="The models this server serves.")]


class FeatureRecord(msgspec.Struct, frozen=True):
    """The current features of one entity: a value on topic `features`.

    Key `<entity>/<id>` (`user/<id>`, `item/<id>`, …). A user's record is whole; any other
    entity's is a per-partition partial that readers merge. Value names starting with `_`
    are the store's raw accumulators.
    """

    entity: str
    id: str
    values: Annotated[dict[str, Scalar], Meta(description="Feature values by name.")]
    ts: Timestamp


class ServedItem(msgspec.Struct, frozen=True):
    """One scored candidate: the raw features exactly as the model saw them."""

    item_id: str
    features: Features
    score: Probability
    shadow_score: Annotated[
        Probability | None,
        Meta(description="The shadow version's score of this item (a candidate on trial)."),
    ] = None


class FeatureLogRecord(msgspec.Struct, frozen=True):
    """What serving scored for one request (topic `feature-log`, key `user_id`)."""

    request_id: str
    user_id: str
    surface: str
    ts: Timestamp
    model: str
    version: Version
    items: list[ServedItem]
    shadow_version: Annotated[
        Version | None,
        Meta(description="A candidate scored beside `version` as a shadow (never answered)."),
    ] = None


class TrainingExample(msgspec.Struct, frozen=True):
    """A shown item's feature vector with its label, once the label is known.

    Topic `training-examples.<model>`, key `user_id`. A served example carries the
    features exactly as serving scored them, with the version and score; an impression
    serving never scored (a replayed log) carries the features as they stood at its time
    in the feature store, and `served` false.
    """

    request_id: str
    user_id: str
    item_id: str
    surface: str
    ts: Timestamp
    label: Annotated[Literal[0, 1], Meta(description="1: engaged within the label window.")]
    features: Features
    served_version: Annotated[
        Version | None, Meta(description="The version that scored it (absent when not served).")
    ] = None
    served_score: Annotated[
        Probability | None, Meta(description="Its score when served (absent when not served).")
    ] = None
    label_ts: (
        Annotated[
            float,
            Meta(
                ge=0,
                description="Event time of the engagement that made the label 1 (absent for 0).",
            ),
        ]
        | None
    ) = None
    shadow_version: Annotated[
        Version | None, Meta(description="The shadow version that also scored it, if any.")
    ] = None
    shadow_score: Annotated[Probability | None, Meta(description="The shadow version's score.")] = (
        None
    )
    served: Annotated[
        bool, Meta(description="Scored by serving (false: an impression of a replayed log).")
    ] = True


class ModelUpdate(msgspec.Struct, frozen=True):
    """Announces a new model version or a stage change (topic `model-updates`, key model)."""

    model: str
    version: Version
    created_at: Timestamp
    kind: UpdateKind = "published"
    metrics: Annotated[
        dict[str, Any], Meta(description="Training metrics of the version (AUC, NE, …).")
    ] = {}


class DeadLetterHeaders(msgspec.Struct, frozen=True):
    """The Kafka headers of a dead letter on `<topic>.dlq` (as UTF-8 strings).

    The record's key and value are the original ones; these headers say why and where
    from. Not a message value: header names and values, described as one record.
    """

    error: Annotated[str, Meta(description="What was expected and what was got.")]
    error_reason: DeadLetterReason = msgspec.field(name="error.reason")
    source_topic: Annotated[str, Meta(min_length=1)] = msgspec.field(name="source.topic")
    source_partition: Annotated[str, Meta(pattern="^[0-9]+$")] = msgspec.field(
        name="source.partition"
    )
    source_offset: Annotated[str, Meta(pattern="^[0-9]+$")] = msgspec.field(name="source.offset")


def stage_update(
    model: str, version: int, stage: str, previous: int | None, metrics: dict[str, Any]
) -> ModelUpdate:
    """The model-updates record saying that ``version`` of ``model`` entered ``stage``
    (``previous``: the production version before the change)."""
    return ModelUpdate(
        model,
        version,
        time.time(),
        kind="stage",
        metrics={**metrics, "stage": stage, "previous": previous},
    )


T = TypeVar("T")

_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}
_ENCODER = msgspec.json.Encoder()


def _decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = _DECODERS[cls] = msgspec.json.Decoder(cls)
    return dec


def _reason(msg: str) -> str:
    if msg.startswith("Object missing required field"):
        return "missing_field"
    if msg.startswith("Invalid enum value") and msg.endswith("`$.type`"):
        return "unknown_type"
    if msg.startswith("Expected") and ", got `" in msg:
        return "wrong_type"
    return "invalid_value"  # a constraint: enum, length, range, pattern


_ENUM_ERROR = re.compile(r"Invalid enum value (?P<got>.+) - at `\$\.(?P<field>\w+)`$")


def _explain(cls: type, msg: str) -> str:
    """msgspec's message, saying which values a top-level enum field expects."""
    m = _ENUM_ERROR.match(msg)
    if m is None:
        return msg
    allowed = _literal_values(cls, m["field"])
    if not allowed:
        return msg
    return f"expected {m['field']} in {allowed}, got {m['got']} (at `$.{m['field']}`)"


def _literal_values(cls: type, field: str) -> list[Any]:
    hint = get_type_hints(cls, include_extras=True).get(field)
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return sorted(get_args(hint), key=str) if get_origin(hint) is Literal else []


def decode(cls: type[T], raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> T:
    """Decode and type-check one JSON record into ``cls``; raise ``ContractError``."""
    if raw is None:
        raise ContractError("missing_value", "expected a JSON object, got an empty message")
    if len(raw) > max_bytes:
        raise ContractError("oversize", f"expected at most {max_bytes} bytes, got {len(raw)}")
    try:
        return _decoder(cls).decode(raw)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        raise ContractError(_reason(msg), f"{cls.__name__}: {_explain(cls, msg)}") from None
    except msgspec.DecodeError as exc:
        raise ContractError("bad_json", f"expected JSON: {exc}") from None


_INT64: Final = 1 << 63
#: Model names become topic names (``training-examples.<model>``) and registry folders.
MODEL_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _invalid(message: str) -> ContractError:
    return ContractError("invalid_value", message)


def _check_int(v: int, where: str) -> None:
    if not -_INT64 <= v < _INT64:
        raise _invalid(f"expected a 64-bit integer at {where}, got one of {len(str(v))} digits")


def _check_scalars(values: Mapping[str, Any] | None, where: str) -> None:
    """Scalars whose numbers fit in 64 bits (floats from JSON are always finite)."""
    if not values:
        return
    for k, v in values.items():
        if type(v) is int:
            _check_int(v, f"{where}.{k}")


def _check_model(model: str) -> None:
    if not MODEL_NAME.match(model):
        raise _invalid(f"expected a model name matching {MODEL_NAME.pattern}, got {model[:80]!r}")


def check_event(ev: ActivityEvent) -> None:
    """Check what an event's types cannot: numbers that fit in 64 bits."""
    if ev.position is not None:
        _check_int(ev.position, "position")
    _check_scalars(ev.context, "context")


def decode_request(
    raw: bytes | None,
    max_bytes: int = MAX_EVENT_BYTES,
    surfaces: Collection[str] | None = None,
) -> PredictionRequest:
    """Decode and validate a prediction request (its surface among ``surfaces``, when
    given: a project's)."""
    return validate_request(decode(PredictionRequest, raw, max_bytes), surfaces)


def validate_request(
    req: PredictionRequest, surfaces: Collection[str] | None = None
) -> PredictionRequest:
    """Check what the types cannot: a surface among ``surfaces`` (a project's, when
    given), at least one candidate, context numbers that fit in 64 bits."""
    if surfaces is not None and req.surface not in surfaces:
        raise ContractError(
            "invalid_value", f"expected surface in {sorted(surfaces)}, got {req.surface!r}"
        )
    if not req.candidates:
        raise ContractError("invalid_value", "expected at least one candidate, got none")
    _check_scalars(req.context, "context")
    return req


def decode_example(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> TrainingExample:
    """Decode and validate a training example (the label is 0 or 1 by the struct)."""
    ex = decode(TrainingExample, raw, max_bytes)
    _check_scalars(ex.features, "features")
    _check_pairs(ex)
    if ex.served_version is not None:
        _check_int(ex.served_version, "served_version")
    if ex.shadow_version is not None:
        _check_int(ex.shadow_version, "shadow_version")
    return ex


#: A feature value as the trainer's decoder checks it: a 64-bit integer in C, not Python.
FeatureValue = str | Annotated[int, Meta(ge=-_INT64, le=_INT64 - 1)] | float
_VERSION64 = Annotated[int, Meta(ge=1, le=_INT64 - 1)]


class ExampleDecoder:
    """Decodes training examples for a learner that reads the features ``names`` only.

    The record is checked against the ``TrainingExample`` contract (every field, label,
    ranges, versions within 64 bits, ``shadow_version`` with ``shadow_score``), but its
    ``features`` decode into a struct of ``names`` (``None`` where absent): a feature
    the learner does not read is skipped unchecked. It is ~4x cheaper than
    :func:`decode_example` (no dict of every feature, no check in Python) and gives the
    same values for the features it reads (``tests/unit/streams/test_contracts_fuzz.py``).
    ``fields`` of a decoded record are its contract fields; ``features`` its values in
    the order of ``names`` (``msgspec.structs.astuple``).
    """

    def __init__(self, names: Sequence[str], max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.names = tuple(names)
        self.max_bytes = max_bytes
        self.type = example_type(self.names)
        self._decoder = msgspec.json.Decoder(self.type)

    def __call__(self, raw: bytes | None) -> Any:
        """Decode one record; raise ``ContractError`` (as :func:`decode_example` would)."""
        if raw is None:
            raise ContractError("missing_value", "expected a JSON object, got an empty message")
        if len(raw) > self.max_bytes:
            raise ContractError(
                "oversize", f"expected at most {self.max_bytes} bytes, got {len(raw)}"
            )
        try:
            ex: Any = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            raise ContractError(
                _reason(msg), f"TrainingExample: {_explain(TrainingExample, msg)}"
            ) from None
        except msgspec.DecodeError as exc:
            raise ContractError("bad_json", f"expected JSON: {exc}") from None
        _check_pairs(ex)
        return ex

    def many(self, raws: Sequence[bytes | None]) -> list[Any]:
        """Decode every record, or raise ``ContractError`` if any is bad (the caller
        then decodes them one by one, for each culprit's own error): the loop is
        msgspec's, in C."""
        if None in raws or max(map(len, raws), default=0) > self.max_bytes:  # type: ignore[arg-type]
            raise ContractError("invalid_value", "a record of the batch is empty or oversize")
        try:
            out: list[Any] = list(map(self._decoder.decode, raws))  # type: ignore[arg-type]
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise ContractError("invalid_value", "a record of the batch is invalid") from None
        versions = list(map(_SHADOW_VERSION, out))
        scores = list(map(_SHADOW_SCORE, out))
        served = list(map(_SERVED, out))
        if (
            versions.count(None) != len(out)
            or scores.count(None) != len(out)
            or served.count(True) != len(out)
            or list(map(_SERVED_VERSION, out)).count(None)
            or list(map(_SERVED_SCORE, out)).count(None)
        ):
            for ex in out:  # some were scored by a shadow, or not served: check each
                _check_pairs(ex)
        return out


_SHADOW_VERSION = attrgetter("shadow_version")
_SHADOW_SCORE = attrgetter("shadow_score")
_SERVED = attrgetter("served")
_SERVED_VERSION = attrgetter("served_version")
_SERVED_SCORE = attrgetter("served_score")


def _check_pairs(ex: Any) -> None:
    """What the types cannot: a shadow's version with its score; served fields exactly
    when served (as :func:`decode_example` checks)."""
    if (ex.shadow_version is None) != (ex.shadow_score is None):
        raise _invalid("expected shadow_version and shadow_score together, got one of them")
    if ex.served != (ex.served_version is not None) or ex.served != (ex.served_score is not None):
        raise _invalid(
            "expected served_version and served_score exactly when served is true, "
            f"got served={ex.served}, served_version={ex.served_version}"
        )


@cache
def example_type(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """``TrainingExample`` with ``features`` as a struct of ``names`` (see
    :class:`ExampleDecoder`); built once per tuple of names."""
    features = msgspec.defstruct(
        "ExampleFeatures",
        [(f"f{i}", FeatureValue, None) for i in range(len(names))],
        rename={f"f{i}": name for i, name in enumerate(names)},
        gc=False,
    )
    hints = get_type_hints(TrainingExample, include_extras=True)
    hints |= {
        "features": features,
        "served_version": _VERSION64 | None,
        "shadow_version": _VERSION64 | None,
    }
    names_ = TrainingExample.__struct_fields__
    defaults = TrainingExample.__struct_defaults__
    required = len(names_) - len(defaults)
    fields: list[Any] = [(n, hints[n]) for n in names_[:required]]
    fields += [(n, hints[n], d) for n, d in zip(names_[required:], defaults, strict=True)]
    return msgspec.defstruct("ExampleOf", fields, gc=False)


def decode_feature_record(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> FeatureRecord:
    """Decode and validate a feature record."""
    rec = decode(FeatureRecord, raw, max_bytes)
    _check_scalars(rec.values, "values")
    return rec


def decode_feature_log(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> FeatureLogRecord:
    """Decode and validate a feature-log record."""
    rec = decode(FeatureLogRecord, raw, max_bytes)
    _check_model(rec.model)
    _check_int(rec.version, "version")
    if rec.shadow_version is not None:
        _check_int(rec.shadow_version, "shadow_version")
    if not rec.user_id:
        raise _invalid("expected a non-empty user_id")
    for i, item in enumerate(rec.items):
        _check_scalars(item.features, f"items[{i}].features")
    return rec


def decode_model_update(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> ModelUpdate:
    """Decode and validate a model update."""
    upd = decode(ModelUpdate, raw, max_bytes)
    _check_model(upd.model)
    _check_int(upd.version, "version")
    return upd


def encode(record: msgspec.Struct) -> bytes:
    """Encode any contract struct to JSON bytes."""
    return _ENCODER.encode(record)
