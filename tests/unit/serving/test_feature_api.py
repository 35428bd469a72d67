"""The feature store's online reads on the real server (uvicorn) over loopback, without a
broker: the values come from the real feature processor through the real replica."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamlearn.serving.feature_api import feature_routes
from streamlearn.serving.http import ServingAPI
from streamlearn.serving.openapi import openapi_document
from streamlearn.serving.replica import FeatureReplica
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.streams.contracts import ActivityEvent
from streamlearn.streams.features.processor import FeatureProcessor
from streamlearn.streams.features.store import MAX_READ_ENTITIES
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.runtime.processor import Record
from tests.example import CATALOG

T = Topics("t.")
NOW = 1_000.0


def _ev(n: int, kind: str, ts: float, user: str, item: str) -> ActivityEvent:
    return ActivityEvent(f"e{n}", kind, ts, user, item, "feed", "r", 0, {"category": f"c{n}"})


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[FeatureReplica]:
    """u1 and u2 on partitions 0 and 1; item i1 seen on both (two partials)."""
    proc = FeatureProcessor(T, tmp_path / "state", CATALOG)
    proc.assign([(T.activity, 0), (T.activity, 1)])
    events = [
        (0, _ev(0, "impression", 900.0, "u1", "i1")),
        (0, _ev(1, "click", 910.0, "u1", "i1")),
        (1, _ev(2, "impression", 950.0, "u2", "i1")),
    ]
    proc.process([Record(T.activity, p, n, None, ev) for n, (p, ev) in enumerate(events)])
    offsets = {(T.activity, 0): 2, (T.activity, 1): 1}
    outputs = proc.prepare(offsets)
    proc.commit(offsets)
    proc.close()
    rep = FeatureReplica(KafkaConfig("127.0.0.1:1"), tmp_path / "replica", CATALOG)  # never started
    rep.apply((str(o.key).encode(), o.value, o.partition or 0) for o in outputs)
    yield rep
    rep.stop()


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=raw)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())


@pytest.fixture
def client(replica: FeatureReplica) -> Iterator[Client]:
    api = ServingAPI(feature_routes(replica, CATALOG, clock=lambda: NOW))
    server = HttpServer(api, "127.0.0.1", 0, HttpLimits()).start()
    c = Client(server.port)
    yield c
    c.conn.close()
    server.stop()


def test_definitions(client: Client) -> None:
    code, body = client.call("GET", "/v1/features")
    assert code == 200 and body == {"features": CATALOG.info()}
    assert {"name", "entity", "type", "description", "owner", "version"} == set(body["features"][0])


def test_one_user_and_one_item_with_partials_merged(client: Client) -> None:
    code, body = client.call("GET", "/v1/features/user/u1")
    assert code == 200, body
    assert (body["entity"], body["id"], body["as_of"]) == ("user", "u1", 910.0)
    values = body["values"]
    assert list(values) == [f.name for f in CATALOG.of("user")]  # no raw accumulators
    assert (values["user_impressions"], values["user_engagements"]) == (1, 1)
    assert values["user_recency_s"] == NOW - 910.0

    code, body = client.call("GET", "/v1/features/item/i1")
    assert code == 200, body
    assert body["values"]["item_impressions"] == 2  # partitions 0 and 1, merged
    assert body["values"]["item_engagements"] == 1
    assert body["values"]["item_category"] == "c2"  # the newest event's
    assert body["as_of"] == 950.0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/features/user/nobody", "got unknown id 'nobody'"),
        ("/v1/features/shop/u1", "expected entity among ['item', 'user'], got 'shop'"),
    ],
)
def test_unknown_ids_and_entity_kinds_are_404(client: Client, path: str, message: str) -> None:
    code, body = client.call("GET", path)
    assert code == 404 and message in body["error"]


def test_many_at_once_in_request_order(client: Client) -> None:
    entities = [
        {"entity": "item", "id": "i1"},
        {"entity": "user", "id": "nobody"},
        {"entity": "user", "id": "u2"},
    ]
    code, body = client.call("POST", "/v1/features:read", {"entities": entities})
    assert code == 200, body
    got = body["entities"]
    assert [(e["entity"], e["id"]) for e in got] == [(e["entity"], e["id"]) for e in entities]
    assert got[0]["values"]["item_impressions"] == 2
    assert got[1]["values"] is None and got[1]["as_of"] is None
    assert got[2]["values"]["user_impressions"] == 1 and got[2]["as_of"] == 950.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "got: JSON is malformed"),
        ({"entity": "user", "id": "u1"}, "Object missing required field `entities`"),
        ({"entities": [{"entity": "user"}]}, "missing required field `id`"),
        ({"entities": []}, "got 0"),
        (
            {"entities": [{"entity": "user", "id": f"u{n}"} for n in range(MAX_READ_ENTITIES + 1)]},
            f"got {MAX_READ_ENTITIES + 1}",
        ),
        ({"entities": [{"entity": "shop", "id": "s1"}]}, "got entity 'shop'"),
    ],
)
def test_bad_bulk_reads_are_400(client: Client, body: Any, message: str) -> None:
    code, reply = client.call("POST", "/v1/features:read", body)
    assert code == 400 and message in reply["error"], reply
    assert "expected {" in reply["error"]


def test_openapi_documents_the_feature_routes(replica: FeatureReplica) -> None:
    doc = openapi_document(feature_routes(replica, CATALOG), "t", "0")
    assert set(doc["paths"]) == {
        "/v1/features",
        "/v1/features/{entity}/{id}",
        "/v1/features:read",
    }
    assert {"EntityFeatures", "FeaturesReadRequest", "FeaturesReply"} <= set(
        doc["components"]["schemas"]
    )
