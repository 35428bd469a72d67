"""Property-based fuzzing of every decoder: bad bytes only ever raise ``ContractError``,
and whatever decodes is safe downstream (keys encode, features featurise, partials merge).

Two kinds of input per decoder: arbitrary bytes, and valid records mutated field by
field, nested fields included (dropped, replaced by any JSON value, or changed to another
value of their type: huge integers, odd strings, negative labels; extra fields added;
some cut short). ``FUZZ_EXAMPLES`` inputs of each kind per decoder.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.models.features import Featuriser
from streamlearn.serving.replica import FeatureReplica
from streamlearn.streams.contracts import (
    MAX_EVENT_BYTES,
    ExampleDecoder,
    decode_example,
    decode_feature_log,
    decode_feature_record,
    decode_model_update,
    decode_request,
)
from streamlearn.streams.errors import ContractError
from streamlearn.streams.features.aggregates import layout
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from tests.example import CATALOG, decode_event, feed_spec, serving_features

FUZZ_EXAMPLES = 400
FEATURISER = Featuriser(feed_spec())
REPLICA = FeatureReplica(
    KafkaConfig("127.0.0.1:1"), Path(tempfile.mkdtemp(prefix="fuzz-replica-")), CATALOG
)
VALID: dict[str, dict[str, Any]] = {
    "event": {
        "event_id": "e1",
        "type": "click",
        "ts": 1.7e9,
        "user_id": "u1",
        "item_id": "i1",
        "surface": "feed",
        "request_id": "r1",
        "position": 2,
        "context": {"category": "shoes", "price": 3.5},
    },
    "request": {
        "request_id": "r1",
        "user_id": "u1",
        "surface": "ads",
        "candidates": ["i1", "i2"],
        "context": {"hour": 3},
    },
    "example": {
        "request_id": "r1",
        "user_id": "u1",
        "item_id": "i1",
        "surface": "feed",
        "ts": 1.7e9,
        "label": 1,
        "features": {"user_id": "u1", "user_ctr": 0.1, "item_impressions": 3},
        "served_version": 4,
        "served_score": 0.2,
    },
    "feature record": {
        "entity": "item",
        "id": "i1",
        "values": {"item_impressions": 3, "item_ctr": 0.1, "item_category": "c"},
        "ts": 1.7e9,
    },
    "feature log": {
        "request_id": "r1",
        "user_id": "u1",
        "surface": "feed",
        "ts": 1.7e9,
        "model": "feed",
        "version": 3,
        "items": [{"item_id": "i1", "features": {"user_id": "u1", "x": 1.0}, "score": 0.3}],
    },
    "model update": {
        "model": "feed",
        "version": 3,
        "created_at": 1.7e9,
        "kind": "stage",
        "metrics": {"auc": 0.7},
    },
}


def _use_event(raw: bytes) -> None:
    ev = decode_event(raw)
    ("user/" + ev.user_id + "item/" + ev.item_id).encode()
    for entity in ("user", "item"):
        lay = layout(CATALOG, entity)
        agg = lay.new()
        lay.update(agg, ev)
        lay.encode("x" + ev.user_id, agg)


def _use_request(raw: bytes) -> None:
    req = decode_request(raw)
    rows = [serving_features(req, c, None, None, 1.7e9) for c in req.candidates]
    FEATURISER.transform_many(rows)


def _use_example(raw: bytes) -> None:
    ex = decode_example(raw)
    assert ex.label in (0, 1)
    FEATURISER.transform_many([ex.features])


def _use_feature_record(raw: bytes) -> None:
    rec = decode_feature_record(raw)
    (rec.entity + "/" + rec.id).encode()
    FEATURISER.transform_many([rec.values])
    # serving's replica takes any record without raising (a bad one is skipped, counted)
    key = f"{rec.entity}/{rec.id}".encode("utf-8", errors="surrogatepass")
    REPLICA.apply([(key, raw, 0)])


def _use_feature_log(raw: bytes) -> None:
    log = decode_feature_log(raw)
    # the joiner produces to this topic: it must be a valid Kafka topic name
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,249}", Topics().training_examples(log.model))
    FEATURISER.transform_many([i.features for i in log.items])


def _use_model_update(raw: bytes) -> None:
    upd = decode_model_update(raw)
    assert upd.kind in ("published", "stage")


DECODERS: dict[str, Callable[[bytes], None]] = {
    "event": _use_event,
    "request": _use_request,
    "example": _use_example,
    "feature record": _use_feature_record,
    "feature log": _use_feature_log,
    "model update": _use_model_update,
}
TRIED: dict[str, int] = {}

edge_ints = st.sampled_from([2, -1, 1 << 63, -(1 << 63) - 1, 10**19, 10**400, -(10**400)])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    edge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "feed", "ads", "click", "item", "stage", "\u0000", "é", "../x", "__"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _same_type(value: Any) -> st.SearchStrategy[Any]:
    """Another value of the same JSON type: what gets past type checks to the logic."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.integers(), edge_ints)
    if isinstance(value, float):
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), edge_ints)
    if isinstance(value, str):
        return st.one_of(st.text(max_size=300), json_scalars.filter(lambda v: isinstance(v, str)))
    return json_values


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field and nested value of ``doc``, as key paths."""
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """A valid record with one to three fields (top-level or nested) dropped, replaced by
    any JSON value, or changed to another value of their type; extra fields; and now and
    then cut short or padded with random bytes."""
    doc = json.loads(json.dumps(valid))
    for path in draw(st.lists(st.sampled_from(_paths(doc)), min_size=1, max_size=3, unique=True)):
        parent: Any = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            value = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed it
        if not isinstance(parent, dict | list):
            continue
        op = draw(st.sampled_from(["drop", "replace", "tweak", "tweak", "grow"]))
        if op == "drop" and isinstance(parent, dict):
            parent.pop(path[-1])
        elif op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "grow" and isinstance(value, dict):
            value[draw(st.text(max_size=6))] = draw(json_scalars)
        elif op == "grow" and isinstance(value, list):
            value.append(draw(json_values))
        else:
            parent[path[-1]] = draw(_same_type(value))
    for extra in draw(st.lists(st.text(max_size=6), max_size=2)):
        doc[extra] = draw(json_values)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 9)) == 9:  # hypothesis favours small integers: rarely cut
        cut = draw(st.integers(1, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=4))
    return raw


def _check(name: str, raw: bytes) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1
    try:
        DECODERS[name](raw)
    except ContractError as exc:
        assert exc.reason, "a ContractError always has a reason"


_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # the same inputs every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_arbitrary_bytes_are_contract_errors(name: str) -> None:
    @_SETTINGS
    @given(st.one_of(st.binary(max_size=300), st.none()))
    def run(raw: bytes | None) -> None:
        _check(name, raw)  # type: ignore[arg-type]

    run()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_mutated_records_are_contract_errors_or_safe(name: str) -> None:
    @_SETTINGS
    @given(mutated(VALID[name]))
    def run(raw: bytes) -> None:
        _check(name, raw)

    run()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_the_valid_record_decodes_and_oversize_ones_do_not(name: str) -> None:
    DECODERS[name](json.dumps(VALID[name]).encode())
    big = json.dumps({**VALID[name], "pad": "x" * (4 * 1024 * 1024 + MAX_EVENT_BYTES)}).encode()
    with pytest.raises(ContractError) as info:
        DECODERS[name](big)
    assert info.value.reason == "oversize"


def test_found_by_fuzzing_huge_integers_and_bad_model_names() -> None:
    """Inputs the fuzzer found that used to decode and then fail downstream."""
    ex = dict(VALID["example"], features={"n": 10**400})
    with pytest.raises(ContractError):  # float(10**400) overflowed in the featuriser
        _use_example(json.dumps(ex).encode())
    with pytest.raises(ContractError):  # a label of 2 was learned as a positive
        _use_example(json.dumps(dict(VALID["example"], label=2)).encode())
    log = dict(VALID["feature log"], model="../../x")
    with pytest.raises(ContractError):  # the joiner would have produced to that topic
        _use_feature_log(json.dumps(log).encode())


#: The features the trainer's decoder reads in these tests (some of VALID's, one absent).
READ = ("user_id", "user_ctr", "absent")
EXAMPLES = ExampleDecoder(READ)


def _without_unread(raw: bytes) -> bytes | None:
    """``raw`` with the features the decoder does not read taken out (``None``: not a
    JSON object with a features object)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), dict):
        return None
    doc["features"] = {k: v for k, v in doc["features"].items() if k in READ}
    return json.dumps(doc).encode()


def test_the_trainers_decoder_agrees_with_decode_example() -> None:
    """``ExampleDecoder`` (the trainer's) accepts what ``decode_example`` accepts, with the
    same values for the features it reads; what it accepts beyond that differs only in
    features it does not read; one at a time or ``many`` at once, the same."""

    @_SETTINGS
    @given(mutated(VALID["example"]))
    def run(raw: bytes) -> None:
        try:
            full = decode_example(raw)
        except ContractError:
            full = None
        try:
            mine = EXAMPLES(raw)
        except ContractError as exc:
            assert exc.reason
            assert full is None, f"decode_example accepted what the trainer refused: {raw!r}"
            with pytest.raises(ContractError):
                EXAMPLES.many([raw])
            return
        assert EXAMPLES.many([raw, raw]) == [mine, mine]
        if full is None:  # then only an unread feature was wrong
            trimmed = _without_unread(raw)
            assert trimmed is not None
            decode_example(trimmed)
            return
        for i, name in enumerate(READ):
            assert getattr(mine.features, f"f{i}") == full.features.get(name)
        for field in full.__struct_fields__:
            if field != "features":
                assert getattr(mine, field) == getattr(full, field)

    run()


@pytest.mark.parametrize(
    "odd",
    [b"", b" ", b"]", b"[", b"{}", b"%s,%s", b"%s]", b"[%s", b"%s ", b"  %s\n"],
    ids=["empty", "blank", "close", "open", "empty-object", "two-values", "closes-the-array",
         "opens-an-array", "trailing-space", "padded"],
)  # fmt: skip
def test_the_trainers_batch_decode_keeps_one_value_per_record(odd: bytes) -> None:
    """``many``: a record that is not exactly one example (empty, two values, a stray
    bracket) fails the batch (then decoded record by record), and one that is (padded
    with whitespace) decodes to its own value, in its place."""
    raw = json.dumps(VALID["example"]).encode()
    record = odd.replace(b"%s", raw)
    try:
        alone = EXAMPLES(record)
    except ContractError:
        alone = None
    if alone is None:
        with pytest.raises(ContractError):
            EXAMPLES.many([raw, record, raw])
    else:
        assert EXAMPLES.many([raw, record, raw]) == [alone] * 3
