"""The feature processor and item-partial merging, without a broker."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from streamlearn.streams.catalog.features import DecayedRate
from streamlearn.streams.contracts import ActivityEvent, FeatureRecord, decode
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.features.store import merge_partials
from streamlearn.streams.runtime.processor import Record
from tests.example import CATALOG
from tests.unit.streams.scenarios import TOPICS

T0 = 1_700_000_000.0
_CTR = CATALOG.get("item_ctr").aggregation
assert isinstance(_CTR, DecayedRate)
CTR_HALF_LIFE_S, CTR_PRIOR, CTR_PRIOR_STRENGTH = _CTR.half_life_s, _CTR.prior, _CTR.strength


def _ev(
    i: int, kind: str, user: str = "u1", item: str = "i1", ts: float = T0, **kw: object
) -> ActivityEvent:
    return ActivityEvent(
        event_id=f"e{i}",
        type=kind,
        ts=ts,
        user_id=user,
        item_id=item,
        surface="feed",
        request_id="r",
        **kw,  # type: ignore[arg-type]
    )


def _run(
    proc: FeatureProcessor, events: list[ActivityEvent], partition: int = 0
) -> dict[str, dict]:
    recs = [Record(TOPICS.activity, partition, i, b"u", e) for i, e in enumerate(events)]
    proc.process(recs)
    out = proc.prepare({(TOPICS.activity, partition): len(recs)})
    proc.commit({(TOPICS.activity, partition): len(recs)})
    return {
        o.key: decode(FeatureRecord, o.value).values  # type: ignore[misc]
        for o in out
        if isinstance(o.key, str) and not o.key.startswith("__")
    }


@pytest.fixture
def proc(tmp_path: Path) -> FeatureProcessor:
    p = FeatureProcessor(TOPICS, tmp_path, CATALOG)
    p.assign([(TOPICS.activity, 0), (TOPICS.activity, 1)])
    return p


def test_counts_ctr_category_and_last_event_time(proc: FeatureProcessor) -> None:
    out = _run(
        proc,
        [
            _ev(0, "impression", context={"category": "shoes"}),
            _ev(1, "impression", item="i2"),
            _ev(2, "click", ts=T0 + 1),
            _ev(3, "hide", item="i2", ts=T0 + 2),
        ],
    )
    user = out["user/u1"]
    assert (user["user_impressions"], user["user_engagements"], user["user_hides"]) == (2, 1, 1)
    assert user["user_last_event_ts"] == T0 + 2
    item = out["item/i1"]
    assert (item["item_impressions"], item["item_engagements"]) == (1, 1)
    assert item["item_category"] == "shoes"
    # smoothed, decayed CTR: one engagement a second after one impression
    decay = math.exp(-math.log(2) / CTR_HALF_LIFE_S)
    want = (1 + CTR_PRIOR * CTR_PRIOR_STRENGTH) / (decay + CTR_PRIOR_STRENGTH)
    assert item["item_ctr"] == pytest.approx(want)


def test_state_accumulates_across_commits_and_is_emitted_once_per_commit(
    proc: FeatureProcessor,
) -> None:
    _run(proc, [_ev(0, "impression")])
    recs = [Record(TOPICS.activity, 0, i, b"u", _ev(i, "impression")) for i in range(1, 6)]
    proc.process(recs)
    out = proc.prepare({(TOPICS.activity, 0): 6})
    keys = [o.key for o in out]
    assert keys.count("user/u1") == 1 and keys.count("item/i1") == 1  # coalesced
    proc.commit({(TOPICS.activity, 0): 6})
    assert orjson.loads(proc.state[0].get("user/u1") or b"{}")["values"]["user_impressions"] == 6


def test_discard_forgets_the_failed_batch_even_in_the_cache(proc: FeatureProcessor) -> None:
    _run(proc, [_ev(0, "impression")])
    proc.process([Record(TOPICS.activity, 0, 1, b"u", _ev(1, "impression"))])
    proc.discard()
    out = _run(proc, [_ev(2, "click")])
    assert out["user/u1"]["user_impressions"] == 1
    assert out["user/u1"]["user_engagements"] == 1


def test_items_are_partial_per_partition_and_merge_to_the_whole(
    proc: FeatureProcessor, tmp_path: Path
) -> None:
    events = [
        _ev(0, "impression", user="u1"),
        _ev(1, "click", user="u1", ts=T0 + 60),
        _ev(2, "impression", user="u2", ts=T0 + 600, context={"category": "hats"}),
    ]
    a = _run(proc, events[:2], 0)
    b = _run(proc, events[2:], 1)
    merged = merge_partials("item", [a["item/i1"], b["item/i1"]], CATALOG)
    assert merged["item_impressions"] == 2 and merged["item_engagements"] == 1
    assert merged["item_last_event_ts"] == T0 + 600
    assert merged["item_category"] == "hats"  # from the newest partial
    # partials merged equal one partition that saw every event
    whole = FeatureProcessor(TOPICS, tmp_path / "whole", CATALOG)
    whole.assign([(TOPICS.activity, 0)])
    one = _run(whole, events, 0)["item/i1"]
    assert set(merged) == set(one)
    for k, v in one.items():
        assert merged[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    assert merge_partials("item", [a["item/i1"]], CATALOG) == a["item/i1"]


def test_merging_no_partials_gives_the_prior() -> None:
    merged = merge_partials("item", [], CATALOG)
    assert merged["item_impressions"] == 0
    assert merged["item_ctr"] == pytest.approx(CTR_PRIOR)
