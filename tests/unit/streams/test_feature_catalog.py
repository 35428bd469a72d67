"""The feature catalog and the accumulators compiled from it, without a broker."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import msgspec
import pytest

from streamlearn.streams.catalog.features import (
    Count,
    DecayedRate,
    Feature,
    FeatureCatalog,
    LastEventTime,
    LatestContext,
    SecondsSince,
)
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.errors import CatalogError
from streamlearn.streams.features.aggregates import layout
from streamlearn.streams.features.store import entity_features, merge_partials, public_values
from tests.example import CATALOG, SCHEMA, feed_spec

#: The docs page that shows the built-in example's features.
PAGE = Path(__file__).resolve().parents[3] / "docs" / "reference" / "example-project.md"
_IDS = itertools.count()
BEGIN, END = "<!-- features:begin -->", "<!-- features:end -->"


def _ev(kind: str, ts: float, user: str = "u1", item: str = "i1", **ctx: str) -> ActivityEvent:
    return ActivityEvent(f"e{next(_IDS)}", kind, ts, user, item, "feed", "r", None, ctx or None)


def test_every_feature_has_its_public_definition() -> None:
    for info in CATALOG.info():
        assert set(info) == {"name", "entity", "type", "description", "owner", "version"}
        assert info["type"] in ("int", "float", "str") and info["owner"] and info["version"] >= 1
    assert CATALOG.get("user_ctr").type == "float"
    assert CATALOG.get("item_category").type == "str"
    assert CATALOG.get("user_recency_s").request_time
    with pytest.raises(KeyError, match="expected a feature among"):
        CATALOG.get("nope")


def test_feed_spec_is_built_from_the_served_features() -> None:
    spec = feed_spec()
    assert spec.categorical == ("user_id", "item_id", "surface", "item_category")
    served = [f.name for f in CATALOG.served() if f.type != "str"]
    assert spec.numeric == tuple(served)
    assert "user_last_event_ts" not in spec.numeric  # stored, not fed to models
    assert spec.crosses == (("user_id", "item_category"),)


def test_the_docs_feature_table_is_the_catalog() -> None:
    text = PAGE.read_text()
    assert BEGIN in text and END in text, f"{PAGE.name} must hold {BEGIN} … {END}"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == CATALOG.markdown().strip(), (
        f"{PAGE.name}'s feature table is out of date: paste `streamlearn features list --markdown`"
    )


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (Feature("user_ctr", "user", Count(frozenset({"click"})), "d", "o"), "declared twice"),
        (Feature("likes", "user", Count(frozenset({"like"})), "d", "o"), "starting with 'user_'"),
        (Feature("user_x", "user", Count(frozenset({"poke"})), "d", "o"), "event types among"),
        (Feature("user_x", "user", Count(frozenset({"like"})), "d", "o", 0), "version >= 1"),
        (Feature("user_x", "user", SecondsSince("item_last_event_ts"), "d", "o"), "SecondsSince"),
        (Feature("user_x", "user", LastEventTime(), "d", "o"), "at most one LastEventTime"),
    ],
)
def test_bad_declarations_are_refused(feature: Feature, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        CATALOG.with_features(feature)


def test_accumulators_count_decay_and_take_the_latest_context() -> None:
    user, item = layout(CATALOG, "user"), layout(CATALOG, "item")
    u, i = user.new(), item.new()
    for ev in (
        _ev("impression", 100.0, category="shoes"),
        _ev("click", 100.0),
        _ev("hide", 700.0, category="hats"),  # 600 s later: decayed by half
        _ev("impression", 50.0, category="late"),  # late: counted, decayed from its time
    ):
        user.update(u, ev)
        item.update(i, ev)
    v = user.values(u)
    assert (v["user_impressions"], v["user_engagements"], v["user_hides"]) == (2, 1, 1)
    assert v["user_last_event_ts"] == 700.0
    den = 0.5 + 2 ** (-650 / 600)
    assert v["_user_ctr_num"] == pytest.approx(0.5) and v["_user_ctr_den"] == pytest.approx(den)
    assert v["user_ctr"] == pytest.approx((0.5 + 0.05 * 10) / (den + 10))
    iv = item.values(i)
    assert iv["item_category"] == "hats" and iv["item_impressions"] == 2  # by event time
    assert "item_hides" not in iv  # not declared for items
    # the record is a FeatureRecord, and restores to the same accumulators
    rec = msgspec.json.decode(user.encode("u1", u))
    assert (rec["entity"], rec["id"], rec["ts"]) == ("user", "u1", 700.0)
    assert rec["values"] == v
    assert user.encode("u1", user.from_values(rec["values"])) == user.encode("u1", u)
    assert public_values(v) == {k: x for k, x in v.items() if not k.startswith("_")}


def test_item_partials_merge_like_one_stream() -> None:
    item = layout(CATALOG, "item")
    events = [
        _ev("impression", 100.0 + 37 * n, category=f"c{n % 3}")
        if n % 4
        else _ev("like", 100.0 + 37 * n)
        for n in range(40)
    ]
    whole = item.new()
    parts = [item.new() for _ in range(3)]
    for n, ev in enumerate(events):
        item.update(whole, ev)
        item.update(parts[n % 3], ev)
    merged = merge_partials("item", [item.values(p) for p in parts], CATALOG)
    expected = item.values(whole)
    assert merged.keys() == expected.keys()
    for k, x in expected.items():
        if isinstance(x, float):
            assert math.isclose(merged[k], x, rel_tol=1e-9), k
        else:
            assert merged[k] == x, k


def test_a_catalog_with_other_aggregations_compiles() -> None:
    catalog = FeatureCatalog(
        (
            Feature("user_likes", "user", Count(frozenset({"like"})), "Likes.", "t"),
            Feature(
                "user_like_rate",
                "user",
                DecayedRate(frozenset({"like"}), frozenset({"impression"}), half_life_s=60.0),
                "Likes per impression, 1 min half-life.",
                "t",
            ),
            Feature(
                "user_share_rate",
                "user",
                DecayedRate(frozenset({"share"}), frozenset({"impression"}), prior=0.0),
                "Shares per impression.",
                "t",
            ),
            Feature("user_device", "user", LatestContext("device"), "Latest device.", "t"),
        ),
        SCHEMA,
    )
    user = layout(catalog, "user")
    a = user.new()
    for ev in (_ev("impression", 10.0, device="ios"), _ev("like", 70.0), _ev("share", 70.0)):
        user.update(a, ev)
    v = user.values(a)
    assert v["user_likes"] == 1 and v["user_device"] == "ios"
    assert v["_user_like_rate_den"] == pytest.approx(0.5)  # one half-life later
    assert v["_user_share_rate_den"] == pytest.approx(2 ** (-60 / 600))
    assert v["_last_ts"] == 70.0  # no LastEventTime declared: kept as a raw accumulator
    assert v["user_share_rate"] == pytest.approx(1.0 / (2 ** (-60 / 600) + 10.0))
    assert set(public_values(v)) == {f.name for f in catalog}


def test_arrival_order_does_not_matter() -> None:
    """Late events count as decayed from their own time, and context values are the
    newest event's, so any arrival order gives the event-time-ordered result — what the
    point-in-time export rebuilds."""
    rng = random.Random(5)
    kinds = ["impression"] * 4 + ["click", "like", "hide"]
    events = [
        _ev(rng.choice(kinds), float(rng.randrange(1000, 5000)), category=f"c{n}")
        for n in range(300)
    ]
    in_time = sorted(events, key=lambda e: (e.ts, e.event_id))
    shuffled = events[:]
    rng.shuffle(shuffled)
    for entity in ("user", "item"):
        lay = layout(CATALOG, entity)
        a, b = lay.new(), lay.new()
        for ev in in_time:
            lay.update(a, ev)
        for ev in shuffled:
            lay.update(b, ev)
        va, vb = lay.values(a), lay.values(b)
        assert va.keys() == vb.keys()
        for k, x in va.items():
            if k.endswith("category"):
                # equal times: either event is the newest; otherwise the same value
                newest = max(e.ts for e in events)
                assert vb[k] in {e.context["category"] for e in events if e.ts == newest}
            else:
                assert vb[k] == pytest.approx(x, rel=1e-9), k


def test_an_online_read_gives_public_values_request_time_features_and_as_of() -> None:
    user = layout(CATALOG, "user")
    a = user.new()
    user.update(a, _ev("impression", 100.0))
    read = entity_features("user", "u1", user.values(a), 130.0, CATALOG)
    assert read is not None and (read.entity, read.id, read.as_of) == ("user", "u1", 100.0)
    assert list(read.values) == [f.name for f in CATALOG.of("user")]  # no raw accumulators
    assert read.values["user_impressions"] == 1 and read.values["user_recency_s"] == 30.0
    older = entity_features("item", "i1", {"item_impressions": 3}, 5.0, CATALOG)  # older record
    assert older is not None and older.values["item_ctr"] == CATALOG.get("item_ctr").default
    assert older.values["item_recency_s"] == -1.0 and older.as_of == 0.0
    assert entity_features("user", "nobody", None, 1.0, CATALOG) is None
