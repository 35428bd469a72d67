"""The data contracts of streamlearn (design.md §4), as msgspec structs.

msgspec decodes and type-checks a JSON event in ~0.3 µs (design.md §6), ~8× faster than
``json`` + hand validation, and gives precise error messages. Every decoder here raises
``ContractError`` with a short ``reason`` code used in dead-letter headers and metrics.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec

from streams.errors import ContractError

EVENT_TYPES: Final = frozenset({"impression", "click", "like", "share", "hide", "conversion"})
ENGAGEMENT_TYPES: Final = frozenset({"click", "like", "share", "conversion"})
SURFACES: Final = frozenset({"feed", "ads"})
MAX_EVENT_BYTES: Final = 64 * 1024

Scalar = str | int | float


class ActivityEvent(msgspec.Struct, frozen=True):
    """One user action. Key on Kafka: ``user_id``. Unknown extra fields are ignored."""

    event_id: str
    type: str
    ts: float
    user_id: str
    item_id: str
    surface: str
    request_id: str
    position: int | None = None
    context: dict[str, Scalar] | None = None


class PredictionRequest(msgspec.Struct, frozen=True):
    """Ask a model to score ``candidates`` for ``user_id`` on ``surface``."""

    request_id: str
    user_id: str
    surface: str
    candidates: list[str]
    context: dict[str, Scalar] | None = None


class PredictionReply(msgspec.Struct, frozen=True):
    """Scores in the order of the request's candidates."""

    request_id: str
    model: str
    version: int
    scores: list[float]


class FeatureRecord(msgspec.Struct, frozen=True):
    """The current features of one entity; the value of a feature-topic record."""

    entity: str
    id: str
    values: dict[str, Scalar]
    ts: float


class ServedItem(msgspec.Struct, frozen=True):
    """One scored candidate: the raw features exactly as the model saw them."""

    item_id: str
    features: dict[str, Scalar]
    score: float


class FeatureLogRecord(msgspec.Struct, frozen=True):
    """What serving scored for one request (the joiner labels it later)."""

    request_id: str
    user_id: str
    surface: str
    ts: float
    model: str
    version: int
    items: list[ServedItem]


class TrainingExample(msgspec.Struct, frozen=True):
    """A served feature vector with its label, once the label window has closed."""

    request_id: str
    user_id: str
    item_id: str
    surface: str
    ts: float
    label: int
    features: dict[str, Scalar]
    served_version: int
    served_score: float


class ModelUpdate(msgspec.Struct, frozen=True):
    """Announces a new model version or a stage change in the registry."""

    model: str
    version: int
    created_at: float
    kind: str = "published"  # or "stage"
    metrics: dict[str, Any] = {}


T = TypeVar("T")

_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}
_ENCODER = msgspec.json.Encoder()


def _decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    dec = _DECODERS.get(cls)
    if dec is None:
        dec = _DECODERS[cls] = msgspec.json.Decoder(cls)
    return dec


def _reason(exc: msgspec.ValidationError) -> str:
    msg = str(exc)
    if msg.startswith("Object missing required field"):
        return "missing_field"
    if msg.startswith("Expected"):
        return "wrong_type"
    return "invalid_value"


def decode(cls: type[T], raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> T:
    """Decode and type-check one JSON record into ``cls``; raise ``ContractError``."""
    if raw is None:
        raise ContractError("missing_value", "expected a JSON object, got an empty message")
    if len(raw) > max_bytes:
        raise ContractError("oversize", f"expected at most {max_bytes} bytes, got {len(raw)}")
    try:
        return _decoder(cls).decode(raw)
    except msgspec.ValidationError as exc:
        raise ContractError(_reason(exc), f"{cls.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError("bad_json", f"expected JSON: {exc}") from None


def decode_event(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> ActivityEvent:
    """Decode and validate an activity event."""
    ev = decode(ActivityEvent, raw, max_bytes)
    if ev.type not in EVENT_TYPES:
        raise ContractError(
            "unknown_type", f"expected type in {sorted(EVENT_TYPES)}, got {ev.type!r}"
        )
    if ev.surface not in SURFACES:
        raise ContractError(
            "invalid_value", f"expected surface in {sorted(SURFACES)}, got {ev.surface!r}"
        )
    if not ev.user_id or not ev.item_id:
        raise ContractError("invalid_value", "expected non-empty user_id and item_id")
    return ev


def decode_request(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> PredictionRequest:
    """Decode and validate a prediction request."""
    req = decode(PredictionRequest, raw, max_bytes)
    if req.surface not in SURFACES:
        raise ContractError(
            "invalid_value", f"expected surface in {sorted(SURFACES)}, got {req.surface!r}"
        )
    if not req.candidates:
        raise ContractError("invalid_value", "expected at least one candidate, got none")
    return req


def encode(record: msgspec.Struct) -> bytes:
    """Encode any contract struct to JSON bytes."""
    return _ENCODER.encode(record)
