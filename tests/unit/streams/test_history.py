"""The feature store as of a time (``FeatureHistory``): every record written before a
catch-up is read, partials merged, nothing from the impression's time or later."""

from __future__ import annotations

import orjson

from streamlearn.project import Count, Events, Feature, Project
from streamlearn.streams.features.history import FeatureHistory
from streamlearn.streams.testing.memory import MemoryBroker

PROJECT = Project(
    name="p",
    events=Events(impressions=["view"], engagements=["buy"]),
    surfaces=["home"],
    features=[Feature("item_views", "item", Count(["view"]))],
)


def _write(broker: MemoryBroker, partition: int, item: str, ts: float, views: int) -> None:
    record = {"entity": "item", "id": item, "ts": ts, "values": {"item_views": views}}
    broker.append("features", orjson.dumps(record), f"item/{item}".encode(), partition)


def _views(values: dict[str, object] | None) -> object:
    assert values is not None
    return values["item_views"]


def test_a_catch_up_reads_every_partition_to_its_end() -> None:
    broker = MemoryBroker(partitions=3)
    broker.create_topics(["features"])
    for n in range(1, 2001):  # more than one batch per partition
        _write(broker, n % 3, "i", float(n), n // 3)
    history = FeatureHistory(broker, "features", PROJECT.catalog, depth=4)
    history.catch_up()
    assert history.applied == 2000
    # the newest record strictly before t in each partition, the partials added
    assert _views(history.at("item", "i", 2001.0)) == 666 + 666 + 666
    assert _views(history.at("item", "i", 1999.0)) == 666 + 665 + 665
    assert history.at("item", "i", 1.0) is None
    assert history.at("item", "unknown", 5000.0) is None
    # what is written later is read by the next catch-up, and only then
    _write(broker, 0, "j", 10.0, 7)
    assert history.at("item", "j", 11.0) is None
    history.catch_up()
    assert _views(history.at("item", "j", 11.0)) == 7
    assert history.at("item", "j", 10.0) is None  # never a record of the time itself
    history.catch_up()  # nothing new: returns at once
    assert history.applied == 2001
    history.close()
