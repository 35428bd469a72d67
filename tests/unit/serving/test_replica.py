from pathlib import Path

from serving.replica import FeatureReplica
from streams.config import KafkaConfig
from streams.contracts import FeatureRecord, encode


def record(entity: str, eid: str, **values: float | str) -> tuple[bytes, bytes]:
    rec = FeatureRecord(entity=entity, id=eid, values=dict(values), ts=1.0)
    return f"{entity}/{eid}".encode(), encode(rec)


def test_apply_lookups_tombstones_and_bad_records(tmp_path: Path) -> None:
    replica = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path)  # never started
    applied = replica.apply(
        [
            record("user", "u1", user_impressions=3, user_ctr=0.25),
            record("item", "i1", item_category="shoes"),
            record("item", "i2", item_impressions=1),
            (b"__fence__", b"{}"),  # control record: skipped
            (None, b"{}"),  # no key: skipped
            (b"user/u9", b"not json"),  # bad record: logged and skipped
        ]
    )
    assert applied == 3 and replica.records_applied == 3
    assert replica.user("u1") == {"user_impressions": 3, "user_ctr": 0.25}
    assert replica.item("i1") == {"item_category": "shoes"}
    assert replica.user("u9") is None and replica.user("i1") is None
    replica.apply([record("user", "u1", user_impressions=4), (b"item/i2", None)])
    assert replica.user("u1") == {"user_impressions": 4}
    assert replica.item("i2") is None
    assert replica.records_applied == 5
    assert replica.path.parent == tmp_path and replica.path.exists()
    replica.stop()
    assert not replica.path.exists()
