"""As-of joins of the point-in-time export, without a broker: no value from the future."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from streamlearn.offline.errors import DatasetError
from streamlearn.offline.point_in_time import EntityRows, FeatureRecordRow, as_of, entity_rows
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.features.aggregates import layout
from streamlearn.streams.features.store import public_values
from tests.example import CATALOG


def _ev(kind: str, ts: float, user: str = "u1", item: str = "i1", cat: str = "") -> ActivityEvent:
    ctx = {"category": cat} if cat else None
    return ActivityEvent(f"e-{user}-{item}-{ts}-{kind}", kind, ts, user, item, "feed", "r", 0, ctx)


def _rows(*rows: tuple[float, str | None, str | None]) -> EntityRows:
    return EntityRows(
        np.array([t for t, _, _ in rows], dtype=np.float64),
        {"user": [u for _, u, _ in rows], "item": [i for _, _, i in rows]},
    )


def test_events_at_and_after_the_row_time_do_not_count() -> None:
    events = [
        _ev("impression", 100.0, cat="shoes"),
        _ev("impression", 250.0, cat="hats"),  # after: would change counts and category
        _ev("click", 200.0),  # exactly at the row's time: would make an engagement
        _ev("impression", 150.0),  # late in the topic, but before the row in event time
    ]
    cols = as_of(
        _rows((200.0, "u1", "i1"), (200.001, "u1", "i1"), (100.0, "u1", "i1"), (1e9, "u1", None)),
        events=events,
        catalog=CATALOG,
    )
    assert cols["user_impressions"] == [2, 2, None, 3]
    assert cols["user_engagements"] == [0, 1, None, 1]
    assert cols["item_engagements"] == [0, 1, None, None]
    assert cols["item_category"] == ["shoes", "shoes", None, None]
    assert cols["user_last_event_ts"] == [150.0, 200.0, None, 250.0]
    # request-time features are computed against the row's time, like serving's "now"
    assert cols["user_recency_s"] == [50.0, 0.001, None, round(1e9 - 250.0, 3)]
    assert list(cols) == [f.name for f in CATALOG.of("user")] + [f.name for f in CATALOG.of("item")]


def test_matches_aggregating_only_the_earlier_events_from_scratch() -> None:
    """A property test: every row's values equal a fresh aggregate of exactly the events
    strictly before its time (rows also sit exactly on event times)."""
    rng = random.Random(3)
    kinds = ["impression"] * 5 + ["click", "like", "hide", "share", "conversion"]
    events = [
        _ev(
            rng.choice(kinds),
            float(rng.randrange(0, 500)),  # coarse times: many ties
            f"u{rng.randrange(4)}",
            f"i{rng.randrange(3)}",
            rng.choice(["", "a", "b"]),
        )
        for _ in range(400)
    ]
    times = [float(rng.randrange(0, 520)) for _ in range(60)] + [ev.ts for ev in events[:20]]
    rows = EntityRows(
        np.array(times),
        {
            "user": [f"u{rng.randrange(5)}" for _ in times],  # u4 never has events
            "item": [f"i{rng.randrange(3)}" for _ in times],
        },
    )
    cols = as_of(rows, events=events, catalog=CATALOG)
    for entity in ("user", "item"):
        lay = layout(CATALOG, entity)
        key = "user_id" if entity == "user" else "item_id"
        for r, t in enumerate(times):
            eid = rows.ids[entity][r]
            before = sorted(
                (e for e in events if getattr(e, key) == eid and e.ts < t), key=lambda e: e.ts
            )
            got = {f.name: cols[f.name][r] for f in CATALOG.stored(entity)}
            if not before:
                assert set(got.values()) == {None}, (entity, eid, t)
                continue
            agg = lay.new()
            for e in before:
                lay.update(agg, e)
            want = public_values(lay.values(agg))
            assert got == pytest.approx(want), (entity, eid, t)


def _rec(
    entity: str, eid: str, partition: int, ts: float, **values: float | str
) -> FeatureRecordRow:
    return FeatureRecordRow(entity, eid, partition, ts, dict(values))


def test_changelog_source_takes_records_strictly_before_and_merges_item_partials() -> None:
    records = [
        _rec("user", "u1", 0, 100.0, user_impressions=1, user_last_event_ts=100.0),
        _rec("user", "u1", 0, 200.0, user_impressions=3, user_last_event_ts=200.0),
        _rec(
            "item", "i1", 0, 100.0, item_impressions=1, item_last_event_ts=100.0, item_category="a"
        ),
        _rec(
            "item", "i1", 2, 150.0, item_impressions=4, item_last_event_ts=150.0, item_category="b"
        ),
        _rec(
            "item", "i1", 0, 300.0, item_impressions=2, item_last_event_ts=300.0, item_category="c"
        ),
    ]
    rows = _rows((200.0, "u1", "i1"), (120.0, "u1", "i1"), (400.0, "u1", "i1"), (50.0, "u1", "i1"))
    cols = as_of(rows, records=records, catalog=CATALOG)
    assert cols["user_impressions"] == [1, 1, 3, None]  # the record at 200 is not before 200
    assert cols["item_impressions"] == [5, 1, 6, None]  # partitions 0 and 2 merged
    assert cols["item_category"] == ["b", "a", "c", None]
    assert cols["item_last_event_ts"] == [150.0, 100.0, 300.0, None]
    assert cols["item_recency_s"] == [50.0, 20.0, 100.0, None]


def test_events_and_records_together_are_refused() -> None:
    with pytest.raises(ValueError, match="got both"):
        as_of(
            _rows((1.0, "u1", None)),
            events=[_ev("impression", 0.0)],
            records=[_rec("user", "u1", 0, 0.0)],
            catalog=CATALOG,
        )


def test_entity_tables_with_timestamps_numbers_iso_strings_and_int_ids() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    for col in (
        pa.array([when], type=pa.timestamp("ms", tz="UTC")),
        pa.array([when.timestamp()]),
        pa.array([int(when.timestamp())]),
        pa.array(["2024-05-01T12:00:00Z"]),
        pa.array(["2024-05-01T12:00:00"]),  # naive: UTC
    ):
        rows = entity_rows(pa.table({"user_id": [42], "ts": col}), "ts", CATALOG)
        assert rows.times.tolist() == [when.timestamp()]
        assert rows.ids == {"user": ["42"]}
    with pytest.raises(DatasetError, match="expected a time column 'time'"):
        entity_rows(pa.table({"user_id": ["u"], "ts": [1.0]}), "time", CATALOG)
    with pytest.raises(DatasetError, match="expected an entity column"):
        entity_rows(pa.table({"who": ["u"], "ts": [1.0]}), "ts", CATALOG)
    with pytest.raises(DatasetError, match="ISO 8601"):
        entity_rows(pa.table({"user_id": ["u"], "ts": ["yesterday"]}), "ts", CATALOG)
