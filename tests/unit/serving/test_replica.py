from pathlib import Path

from streamlearn.serving.replica import FeatureReplica
from streamlearn.streams.contracts import FeatureRecord, encode
from streamlearn.streams.kafka.config import KafkaConfig
from tests.example import CATALOG


def record(
    entity: str, eid: str, partition: int = 0, **values: float | str
) -> tuple[bytes, bytes, int]:
    rec = FeatureRecord(entity=entity, id=eid, values=dict(values), ts=1.0)
    return f"{entity}/{eid}".encode(), encode(rec), partition


def test_apply_lookups_tombstones_and_bad_records(tmp_path: Path) -> None:
    replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path, CATALOG)  # never started
    applied = replica.apply(
        [
            record("user", "u1", user_impressions=3, user_ctr=0.25),
            record(
                "item", "i1", 0, item_category="shoes", item_impressions=2, item_last_event_ts=5.0
            ),
            record("item", "i1", 3, item_impressions=3, item_engagements=1, item_last_event_ts=4.0),
            record("item", "i2", 1, item_impressions=1),
            (b"__fence__", b"{}", 0),  # control record: skipped
            (None, b"{}", 0),  # no key: skipped
            (b"user/u9", b"not json", 0),  # bad record: logged and skipped
        ]
    )
    assert applied == 4 and replica.records_applied == 4
    assert replica.user("u1") == {"user_impressions": 3, "user_ctr": 0.25}
    i1 = replica.item("i1")
    assert i1 is not None  # partials of partitions 0 and 3, merged
    assert (i1["item_impressions"], i1["item_engagements"]) == (5, 1)
    assert i1["item_category"] == "shoes" and i1["item_last_event_ts"] == 5.0
    assert replica.user("u9") is None and replica.user("i1") is None
    # a newer partial of one partition replaces only that partition's share
    replica.apply([record("item", "i1", 3, item_impressions=10, item_last_event_ts=6.0)])
    assert replica.item("i1")["item_impressions"] == 12  # type: ignore[index]
    replica.apply([record("user", "u1", user_impressions=4), (b"item/i2", None, 1)])
    assert replica.user("u1") == {"user_impressions": 4}
    assert replica.item("i2") is None
    assert replica.records_applied == 7
    assert replica.path.parent == tmp_path and replica.path.exists()
    replica.stop()
    assert not replica.path.exists()


def test_an_entity_is_the_same_mapping_until_it_changes(tmp_path: Path) -> None:
    replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path, CATALOG, cache_entities=3)
    assert replica.user("u1") is None  # absent: remembered as absent ...
    replica.apply([record("user", "u1", user_impressions=1)])
    first = replica.user("u1")  # ... until written
    assert first == {"user_impressions": 1} and replica.user("u1") is first
    replica.apply([record("user", "u2", user_impressions=2)])  # another entity
    assert replica.user("u1") is first
    replica.apply([record("user", "u1", user_impressions=5)])
    second = replica.user("u1")
    assert second == {"user_impressions": 5} and second is not first
    assert first == {"user_impressions": 1}  # a mapping once returned never changes
    replica.apply([record("item", "i1", 2, item_impressions=3)])
    item = replica.item("i1")
    replica.apply([record("item", "i1", 0, item_impressions=4)])  # another partition's
    assert replica.item("i1") is not item and replica.item("i1")["item_impressions"] == 7  # type: ignore[index]
    for u in range(10):  # bounded: the oldest are read again from the store
        assert replica.user(f"x{u}") is None
    assert len(replica._cache) == 3 and replica.user("u1") == second
    replica.stop()


def test_a_read_racing_a_write_never_keeps_the_old_value(tmp_path: Path) -> None:
    replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path, CATALOG)
    replica.apply([record("user", "u1", user_impressions=1)])
    db = replica._db

    class Racing:  # the store, with a write landing between a read and its caching
        def __getattr__(self, name: str) -> object:
            return getattr(db, name)

        def get(self, key: bytes) -> object:
            raw = db.get(key)
            replica._db = db
            replica.apply([record("user", "u1", user_impressions=2)])
            return raw

    replica._db = Racing()  # type: ignore[assignment]
    assert replica.user("u1") == {"user_impressions": 1}  # read before the write: fine
    assert replica.user("u1") == {"user_impressions": 2}  # but not kept past it
    replica.stop()
