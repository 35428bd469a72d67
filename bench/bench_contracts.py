"""What the contracts' constraints cost the hot decoders.

Each record is decoded three ways in the same run, interleaved: ``orjson.loads`` (an
untyped dict, the baseline), the same struct with every constraint stripped (plain
``str``/``int``/``float`` fields: what the decoders were before they carried enums,
lengths and ranges) and the real decoder (``streamlearn.streams.contracts``). Ratios are against
the baseline; the last column is the constraints' own cost.

    python bench/bench_contracts.py
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import orjson

from streamlearn.streams import contracts as c

ROUNDS = 7
N = 100_000


def _strip(t: Any, twins: dict[type, type]) -> Any:
    """``t`` without Meta constraints and with each Literal replaced by its base type."""
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _strip(typing.get_args(t)[0], twins)
    if origin is Literal:
        return type(typing.get_args(t)[0])
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return _twin(t, twins)
    if origin in (list, dict):
        return origin[tuple(_strip(a, twins) for a in typing.get_args(t))]
    if origin in (typing.Union, __import__("types").UnionType):
        args = tuple(_strip(a, twins) for a in typing.get_args(t))
        return typing.Union[args]  # noqa: UP007 - built from a tuple
    return t


def _twin(cls: type[msgspec.Struct], twins: dict[type, type]) -> type:
    if cls not in twins:
        fields = []
        for f in msgspec.structs.fields(cls):
            if f.required:
                fields.append((f.name, _strip(f.type, twins)))
            else:
                fields.append((f.name, _strip(f.type, twins), f.default))
        twins[cls] = msgspec.defstruct(f"Plain{cls.__name__}", fields, frozen=True)
    return twins[cls]


def _records() -> list[tuple[str, type[msgspec.Struct], bytes, Callable[[bytes], Any]]]:
    ev = {
        "event_id": "run-e12345",
        "type": "click",
        "ts": 1764000000.123,
        "user_id": "u123",
        "item_id": "i4567",
        "surface": "feed",
        "request_id": "r-99",
        "position": 2,
        "context": {"category": "c3"},
    }
    feats = {"user_ctr": 0.1, "item_ctr": 0.2, "user_impressions": 12.0, "item_category": "c3"}
    ex = {
        "request_id": "r-99",
        "user_id": "u123",
        "item_id": "i4567",
        "surface": "feed",
        "ts": 1764000000.1,
        "label": 1,
        "features": feats,
        "served_version": 3,
        "served_score": 0.12,
    }
    fr = {"entity": "user", "id": "u123", "values": {"user_ctr": 0.1, "_acc": 3.0}, "ts": 1.0}
    items = [{"item_id": f"i{i}", "features": feats, "score": 0.1} for i in range(20)]
    fl = {
        "request_id": "r-99",
        "user_id": "u123",
        "surface": "feed",
        "ts": 1.0,
        "model": "feed",
        "version": 3,
        "items": items,
    }
    rq = {
        "request_id": "r-99",
        "user_id": "u123",
        "surface": "feed",
        "candidates": [f"i{i}" for i in range(20)],
    }
    return [
        ("activity event", c.ActivityEvent, orjson.dumps(ev), c.decode_event),
        (
            "training example",
            c.TrainingExample,
            orjson.dumps(ex),
            lambda r: c.decode(c.TrainingExample, r),
        ),
        (
            "feature record",
            c.FeatureRecord,
            orjson.dumps(fr),
            lambda r: c.decode(c.FeatureRecord, r),
        ),
        (
            "feature-log, 20 items",
            c.FeatureLogRecord,
            orjson.dumps(fl),
            lambda r: c.decode(c.FeatureLogRecord, r),
        ),
        ("prediction request, 20", c.PredictionRequest, orjson.dumps(rq), c.decode_request),
    ]


def _ns(fn: Callable[[bytes], Any], raw: bytes) -> float:
    t0 = time.perf_counter()
    for _ in range(N):
        fn(raw)
    return (time.perf_counter() - t0) / N * 1e9


def main() -> None:
    twins: dict[type, type] = {}
    rows = []
    for name, cls, raw, real in _records():
        twin = _twin(cls, twins)

        def plain(r: bytes, twin: type = twin) -> Any:
            return c.decode(twin, r)  # the same wrapper (size check, errors) as the real one

        best = {"orjson": float("inf"), "plain": float("inf"), "real": float("inf")}
        for _ in range(ROUNDS):
            for key, fn in (("orjson", orjson.loads), ("plain", plain), ("real", real)):
                best[key] = min(best[key], _ns(fn, raw))
        rows.append((name, best))
    print(f"{'record':24s} {'orjson ns':>10s} {'plain':>7s} {'contract':>9s} {'x plain':>8s}")
    for name, b in rows:
        print(
            f"{name:24s} {b['orjson']:10.0f} {b['plain']:7.0f} {b['real']:9.0f}"
            f" {b['real'] / b['plain']:8.2f}"
        )


if __name__ == "__main__":
    main()
