"""Declared features and the feature processor.

Every feature is declared once (name, entity, type, description). The processor keeps
per-user and per-item aggregates in partitioned RocksDB stores. It consumes two
co-partitioned topics: ``activity`` (key = user_id) for user aggregates, which it also
re-keys by item_id onto ``activity.by-item``, and ``activity.by-item`` for item aggregates,
so each entity's state lives in exactly one partition. Every changed entity is emitted
once per batch to the ``features`` topic, which is both the stores' changelog and what
serving replicates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

from models.features import FeatureSpec
from streams.contracts import (
    ENGAGEMENT_TYPES,
    ActivityEvent,
    FeatureRecord,
    PredictionRequest,
    Scalar,
    decode_event,
    encode,
)
from streams.processor import Decoder, Output, Record, StatefulProcessor
from streams.state import RestoreSource
from streams.topics import Topics

Entity = Literal["user", "item"]

#: Half-life of the decayed click-through rates, in seconds of event time.
CTR_HALF_LIFE_S: Final = 600.0
#: Beta prior of the smoothed CTRs: (prior_ctr * strength) / strength.
CTR_PRIOR: Final = 0.05
CTR_PRIOR_STRENGTH: Final = 10.0


@dataclass(frozen=True)
class Feature:
    """One declared feature."""

    name: str
    entity: Entity
    type: Literal["int", "float", "str"]
    description: str


FEATURES: Final[tuple[Feature, ...]] = (
    Feature("user_impressions", "user", "int", "Impressions shown to the user, all time."),
    Feature("user_engagements", "user", "int", "Clicks, likes, shares, conversions by the user."),
    Feature("user_hides", "user", "int", "Items the user hid."),
    Feature(
        "user_ctr",
        "user",
        "float",
        "Engagements per impression, exponentially decayed (half-life 10 min), smoothed.",
    ),
    Feature("user_last_event_ts", "user", "float", "Event time of the user's latest event."),
    Feature("item_impressions", "item", "int", "Times the item was shown, all time."),
    Feature("item_engagements", "item", "int", "Engagements with the item."),
    Feature(
        "item_ctr",
        "item",
        "float",
        "Engagements per impression of the item, decayed (half-life 10 min), smoothed.",
    ),
    Feature("item_category", "item", "str", "Category, from the event context `category`."),
    Feature("item_last_event_ts", "item", "float", "Event time of the item's latest event."),
)

#: Features computed at serving time from the stored ones (relative to the request).
DERIVED: Final[tuple[Feature, ...]] = (
    Feature("user_recency_s", "user", "float", "Seconds since the user's previous event."),
    Feature("item_recency_s", "item", "float", "Seconds since the item's previous event."),
)


class _Agg(msgspec.Struct):
    """Running aggregates of one entity (stored in RocksDB)."""

    impressions: int = 0
    engagements: int = 0
    hides: int = 0
    imp_decayed: float = 0.0
    eng_decayed: float = 0.0
    last_ts: float = 0.0
    category: str = ""

    def update(self, ev: ActivityEvent) -> None:
        if self.last_ts and ev.ts > self.last_ts:
            decay = math.exp(-(ev.ts - self.last_ts) * math.log(2) / CTR_HALF_LIFE_S)
            self.imp_decayed *= decay
            self.eng_decayed *= decay
        if ev.type == "impression":
            self.impressions += 1
            self.imp_decayed += 1.0
        elif ev.type in ENGAGEMENT_TYPES:
            self.engagements += 1
            self.eng_decayed += 1.0
        elif ev.type == "hide":
            self.hides += 1
        self.last_ts = max(self.last_ts, ev.ts)
        if ev.context and isinstance(ev.context.get("category"), str):
            self.category = str(ev.context["category"])

    @property
    def ctr(self) -> float:
        return (self.eng_decayed + CTR_PRIOR * CTR_PRIOR_STRENGTH) / (
            self.imp_decayed + CTR_PRIOR_STRENGTH
        )


_AGG_DECODER = msgspec.json.Decoder(_Agg)
_AGG_ENCODER = msgspec.json.Encoder()


def _values(entity: Entity, agg: _Agg) -> dict[str, Scalar]:
    if entity == "user":
        return {
            "user_impressions": agg.impressions,
            "user_engagements": agg.engagements,
            "user_hides": agg.hides,
            "user_ctr": round(agg.ctr, 6),
            "user_last_event_ts": agg.last_ts,
        }
    return {
        "item_impressions": agg.impressions,
        "item_engagements": agg.engagements,
        "item_ctr": round(agg.ctr, 6),
        "item_category": agg.category,
        "item_last_event_ts": agg.last_ts,
    }


class FeatureProcessor(StatefulProcessor):
    """Per-user and per-item aggregates; emits changed entities to the features topic."""

    name = "features"

    def __init__(
        self, topics: Topics, state_dir: Path, restore: RestoreSource | None = None
    ) -> None:
        super().__init__(state_dir, topics.features_changelog, restore=restore)
        self.topics = topics

    def inputs(self) -> Mapping[str, Decoder]:
        return {self.topics.activity: decode_event, self.topics.activity_by_item: decode_event}

    def process(self, records: list[Record]) -> list[Output]:
        by_item = self.topics.activity_by_item
        touched: dict[tuple[int, str], tuple[Entity, str, _Agg]] = {}
        out: list[Output] = []
        for r in records:
            ev: ActivityEvent = r.value
            entity: Entity = "item" if r.topic == by_item else "user"
            if entity == "user":
                out.append(Output(by_item, encode(ev), ev.item_id))
            eid = ev.item_id if entity == "item" else ev.user_id
            key = f"{entity}/{eid}"
            hit = touched.get((r.partition, key))
            if hit is None:
                raw = self.state[r.partition].get(key)
                agg = _agg_from_state(raw)
                hit = touched[(r.partition, key)] = (entity, eid, agg)
            hit[2].update(ev)
        for (p, key), (entity, eid, agg) in touched.items():
            store = self.state[p]
            store.put(key, _AGG_ENCODER.encode(agg))
            rec = FeatureRecord(entity=entity, id=eid, values=_values(entity, agg), ts=agg.last_ts)
            out.append(Output(self.topics.features, encode(rec), key, partition=p))
        return out


def _agg_from_state(raw: bytes | None) -> _Agg:
    return _Agg() if raw is None else _AGG_DECODER.decode(raw)


# -- what serving feeds the model ---------------------------------------------------------
_USER_DEFAULTS: Final[dict[str, Scalar]] = {
    "user_impressions": 0,
    "user_engagements": 0,
    "user_hides": 0,
    "user_ctr": CTR_PRIOR,
}
_ITEM_DEFAULTS: Final[dict[str, Scalar]] = {
    "item_impressions": 0,
    "item_engagements": 0,
    "item_ctr": CTR_PRIOR,
    "item_category": "",
}


def serving_features(
    request: PredictionRequest,
    item_id: str,
    user: Mapping[str, Scalar] | None,
    item: Mapping[str, Scalar] | None,
    now: float,
) -> dict[str, Scalar]:
    """The raw feature dict scored for one candidate (and logged exactly as scored)."""
    x: dict[str, Scalar] = {"user_id": request.user_id, "item_id": item_id}
    x["surface"] = request.surface
    if request.context:
        for k, v in request.context.items():
            x[f"ctx_{k}"] = v
    x.update(_USER_DEFAULTS)
    x.update(_ITEM_DEFAULTS)
    if user:
        x.update((k, v) for k, v in user.items() if k in _USER_DEFAULTS)
        last = user.get("user_last_event_ts")
        x["user_recency_s"] = round(now - float(last), 3) if last else -1.0
    else:
        x["user_recency_s"] = -1.0
    if item:
        x.update((k, v) for k, v in item.items() if k in _ITEM_DEFAULTS)
        last = item.get("item_last_event_ts")
        x["item_recency_s"] = round(now - float(last), 3) if last else -1.0
    else:
        x["item_recency_s"] = -1.0
    return x


def feed_spec(hash_bits: int = 20) -> FeatureSpec:
    """The feature spec of the ``feed`` model: what serving's raw features hash into."""
    return FeatureSpec(
        categorical=("user_id", "item_id", "surface", "item_category"),
        numeric=(
            "user_impressions",
            "user_engagements",
            "user_hides",
            "user_ctr",
            "user_recency_s",
            "item_impressions",
            "item_engagements",
            "item_ctr",
            "item_recency_s",
        ),
        crosses=(("user_id", "item_category"),),
        hash_bits=hash_bits,
    )
