"""Candidates featurised from cached parts give exactly the rows' arrays and logged rows."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import pytest

from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.serving.candidates import CandidateFeaturiser, FeatureLog
from streamlearn.streams.catalog.features import (
    Count,
    Feature,
    FeatureCatalog,
    SecondsSince,
)
from streamlearn.streams.contracts import (
    FeatureLogRecord,
    PredictionRequest,
    ServedItem,
    decode,
    encode,
)
from streamlearn.streams.features.store import ServedFeatures
from tests.example import CATALOG, feed_spec

NOW = 1_700_000_000.123
ODD = 'i"7,\\é^x=y'  # an id JSON must escape, with the separators of keys and crosses
EXTRA = CATALOG.with_features(
    Feature("user_likes", "user", Count(frozenset({"like"})), "Likes.", "test"),
    Feature("user_idle_s", "user", SecondsSince("user_last_event_ts"), "s", "test"),
)
SPECS = {
    "feed": feed_spec(12),
    "crosses": FeatureSpec(
        categorical=(
            "user_id",
            "item_id",
            "surface",
            "item_category",
            "ctx_hour",
            "ctx_dev",
            "user_impressions",
            "nope",
        ),
        numeric=(
            "user_impressions",
            "item_ctr",
            "user_recency_s",
            "item_recency_s",
            "ctx_hour",
            "nope",
            "user_ctr",
        ),
        crosses=(
            ("user_id", "item_category"),
            ("surface", "item_category"),
            ("item_id", "item_category"),
            ("user_id", "surface"),
            ("ctx_hour", "user_id", "item_category"),
            ("item_category", "ctx_dev"),
            ("surface", "ctx_hour"),
        ),
        hash_bits=10,
        numeric_transform="identity",
    ),
    "gapped": FeatureSpec(
        categorical=("user_id", "item_id", "item_category"),
        crosses=(("item_id", "user_id", "item_category"),),
        hash_bits=8,
    ),
    "rowwise": FeatureSpec(
        categorical=("user_id", "item_recency_s"), numeric=("item_ctr",), hash_bits=8
    ),
}


def _world(rng: np.random.Generator, catalog: FeatureCatalog) -> tuple[dict, dict]:
    users: dict[str, Mapping[str, Any] | None] = {}
    items: dict[str, Mapping[str, Any] | None] = {}
    for u in range(30):
        if rng.random() < 0.2:
            users[f"u{u}"] = None  # never seen
            continue
        v: dict[str, Any] = {
            "user_impressions": int(rng.integers(0, 9)),
            "user_ctr": float(rng.random()),
            "user_last_event_ts": float(NOW - rng.exponential(50)) if rng.random() < 0.8 else 0,
        }
        if "user_likes" in {f.name for f in catalog.features} and rng.random() < 0.5:
            v["user_likes"] = int(rng.integers(0, 3))
        if rng.random() < 0.3:
            del v["user_ctr"]  # an older record: the default is served
        users[f"u{u}"] = v
    for i in range(41):
        if rng.random() < 0.15:
            items[ODD if i == 40 else f"i{i}"] = None
            continue
        category: Any = ["shoes", "", "hats", 7, "x^y=z"][int(rng.integers(0, 5))]
        items[ODD if i == 40 else f"i{i}"] = {
            "item_impressions": int(rng.integers(0, 99)),
            "item_ctr": float(rng.random()),
            "item_category": category,
            "item_last_event_ts": float(NOW - rng.exponential(5)),
        }
    return users, items


def _request(rng: np.random.Generator, k: int) -> PredictionRequest:
    ctx: list[dict[str, Any] | None] = [
        None,
        {"hour": int(rng.integers(0, 3))},
        {"hour": True, "dev": "ios"},
        {"hour": 1.0, "dev": 3},
        {"dev": "ios", "hour": 1},
        {"hour": 1},  # equal keys, different categories: 1, True, 1.0
        {"hour": True},
        {"hour": 1.0},
    ]
    n = int(rng.integers(1, 25))
    return PredictionRequest(
        request_id=f"r{k}",
        user_id=f"u{rng.integers(0, 32)}",  # two never stored at all
        surface=["feed", "ads"][k % 2],  # type: ignore[arg-type]
        candidates=[
            ODD if j == 41 else f"i{j}" for j in rng.integers(0, 43, n)
        ],  # repeats, unknown
        context=ctx[k % len(ctx)],
    )


def _check(cf: CandidateFeaturiser, served: ServedFeatures, req, users, items, now) -> None:
    user = users.get(req.user_id)
    stored = [items.get(c) for c in req.candidates]
    got = cf.featurise(req, user, stored, now)
    rows = [served.row(req, c, user, i, now) for c, i in zip(req.candidates, stored, strict=True)]
    idx, val = cf.featuriser.transform_many(rows)
    np.testing.assert_array_equal(got.idx, idx)
    np.testing.assert_array_equal(got.val, val)
    assert got.val.dtype == np.float32 and got.idx.dtype == np.int64
    assert [json.loads(f) for f in got.features] == rows
    assert [json.loads(i) for i in got.ids] == req.candidates


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "numpy"])
@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("catalog", [CATALOG, EXTRA], ids=["catalog", "extended"])
def test_the_arrays_and_logged_rows_are_the_rows_exactly(
    spec_name: str, catalog: FeatureCatalog, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the compiled kernel's numeric transform, and with the featuriser's where
    the kernel's would not give the same bits."""
    import streamlearn.serving.candidates as module

    if not kernel:
        monkeypatch.setattr(module, "_kernel_transforms_alike", lambda featuriser: False)
    rng = np.random.default_rng(7)
    served = ServedFeatures(catalog)
    cf = CandidateFeaturiser(Featuriser(SPECS[spec_name]), served, max_items=16)
    assert (cf._transform >= 0) == kernel
    assert cf.rowwise == (spec_name in ("gapped", "rowwise"))
    users, items = _world(rng, catalog)
    for k in range(300):
        if k % 25 == 0:  # features change: new mappings (the source never mutates one)
            users, items = _world(rng, catalog)
        _check(cf, served, _request(rng, k), users, items, NOW + k * 0.37)


def test_parts_are_kept_until_the_features_change(monkeypatch: pytest.MonkeyPatch) -> None:
    served = ServedFeatures(CATALOG)
    cf = CandidateFeaturiser(Featuriser(feed_spec(12)), served)
    users, items = _world(np.random.default_rng(1), CATALOG)
    req = PredictionRequest("r", "u1", "feed", ["i1", "i2", "i3"], {"hour": 3})
    _check(cf, served, req, users, items, NOW)
    calls: list[int] = []
    real = cf.featuriser.transform_many
    monkeypatch.setattr(
        cf.featuriser, "transform_many", lambda rows: calls.append(len(rows)) or real(rows)
    )
    _check(cf, served, req, users, items, NOW + 5)  # all kept: no row encoded
    assert calls == [3]  # (the reference rows of the check)
    items = {**items, "i2": {"item_ctr": 0.9, "item_category": "new"}}  # i2 changed
    users = {**users, "u1": {"user_impressions": 99}}
    calls.clear()
    _check(cf, served, req, users, items, NOW + 6)
    assert calls == [1, 1, 3]  # i2's part, u1's part, then the check's rows


def test_concurrent_requests_while_features_change() -> None:
    served = ServedFeatures(CATALOG)
    spec = SPECS["crosses"]
    cf = CandidateFeaturiser(Featuriser(spec), served, max_items=32)
    rng = np.random.default_rng(3)
    worlds = [_world(rng, CATALOG) for _ in range(4)]
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for k in range(150):
                users, items = worlds[int(r.integers(0, 4))]
                _check(cf, served, _request(r, k), users, items, NOW + k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_feature_log_encodes_as_the_contract_record() -> None:
    served = ServedFeatures(CATALOG)
    cf = CandidateFeaturiser(Featuriser(feed_spec(12)), served)
    users, items = _world(np.random.default_rng(2), CATALOG)
    req = PredictionRequest("r9", "u3", "ads", ["i1", "i5"], {"hour": 4})
    got = cf.featurise(req, users.get("u3"), [items.get("i1"), items.get("i5")], NOW)
    log = FeatureLog("r9", "u3", "ads", NOW, "ads", 7, got, [0.25, 0.5], [0.375, 0.125], 3)
    rows = [served.row(req, c, users.get("u3"), items.get(c), NOW) for c in req.candidates]
    want = FeatureLogRecord(
        "r9",
        "u3",
        "ads",
        NOW,
        "ads",
        7,
        [ServedItem("i1", rows[0], 0.25, 0.375), ServedItem("i5", rows[1], 0.5, 0.125)],
        3,
    )
    assert decode(FeatureLogRecord, log.encode()) == want
    assert json.loads(log.encode()) == json.loads(encode(want))
    alone = FeatureLog("r9", "u3", "ads", NOW, "ads", 7, got, [0.25, 0.5])
    want = msgspec.structs.replace(
        want,
        items=[ServedItem("i1", rows[0], 0.25), ServedItem("i5", rows[1], 0.5)],
        shadow_version=None,
    )
    assert decode(FeatureLogRecord, alone.encode()) == want
