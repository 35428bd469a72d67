"""Serving end to end on the embedded broker, over real HTTP on loopback.

Feature records on the features topic reach the replica; a model in a registry is
served; predictions are answered over HTTP and over the request topic and feature-logged
on Kafka; a model-update announcement hot-swaps the model (registry polling is slowed
down to a minute so the swap can only come from the topic). The request topic routes by
the ``model`` header across several served models, and answers a request it cannot
serve with an error reply, holding no other request back.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from confluent_kafka import Consumer

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.app import ServingApp, ServingConfig
from streamlearn.streams.contracts import FeatureRecord, ModelUpdate, PredictionRequest, encode
from streamlearn.streams.kafka.clients import check, flush, make_consumer, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_topics
from tests.example import CATALOG, PROJECT
from tests.integration.waiting import wait_for
from tests.unit.serving.helpers import publish_ftrl, trained_ftrl

pytestmark = pytest.mark.integration

USERS = {
    f"u{i}": {"user_impressions": 10 * i, "user_ctr": 0.1, "user_last_event_ts": 1.0}
    for i in range(5)
}
ITEMS = {f"i{i}": {"item_impressions": i, "item_category": f"c{i % 2}"} for i in range(20)}


def _ensure(kafka: KafkaConfig, topics: Topics) -> None:
    ensure_topics(
        kafka,
        [
            topics.features,
            topics.feature_log,
            topics.predictions,
            topics.prediction_requests,
            topics.dlq(topics.prediction_requests),
        ],
    )
    ensure_topics(kafka, [topics.model_updates], partitions=1)


class Reader:
    """Reads topics from their start and keeps every record by topic."""

    def __init__(self, kafka: KafkaConfig, names: list[str]) -> None:
        self.consumer: Consumer = make_consumer(kafka, f"test-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe(names)
        self.records: dict[str, list[tuple[bytes | None, bytes | None, Any]]] = {
            n: [] for n in names
        }

    def find(self, topic: str, pred: Callable[[Any], bool], timeout_s: float = 20.0) -> Any:
        def poll() -> Any:
            for m in self.consumer.consume(500, 0.1):
                if check(m):
                    self.records[m.topic()].append((m.key(), m.value(), m.headers()))
            return next((r for r in self.records[topic] if pred(r)), None)

        return wait_for(poll, timeout_s, f"a matching record on {topic}")


def test_serving_end_to_end(kafka: KafkaConfig, topics: Topics, tmp_path: Path) -> None:
    _ensure(kafka, topics)
    reader = Reader(
        kafka, [topics.feature_log, topics.predictions, topics.dlq(topics.prediction_requests)]
    )
    producer = make_producer(kafka)
    for entity, table in (("user", USERS), ("item", ITEMS)):
        for eid, values in table.items():
            rec = FeatureRecord(entity=entity, id=eid, values=values, ts=1.0)
            produce(producer, topics.features, encode(rec), f"{entity}/{eid}")
    produce(producer, topics.features, b"{}", "__fence__")  # control record: ignored
    flush(producer)

    registry = FileRegistry(tmp_path / "registry")
    publish_ftrl(registry)
    config = ServingConfig(
        project=PROJECT,
        port=0,
        models=("feed",),
        registry_dir=registry.root,
        kafka=kafka,
        state_dir=tmp_path / "state",
        registry_poll_s=60.0,
    )
    with ServingApp(config) as app:
        assert app.service.version("feed") == 1
        wait_for(lambda: app.replica.records_applied == len(USERS) + len(ITEMS), 20, "the replica")
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)

        def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            conn.request(method, path, body=None if body is None else json.dumps(body))
            resp = conn.getresponse()
            data = resp.read()
            ok_json = resp.getheader("Content-Type") == "application/json"
            return resp.status, json.loads(data) if ok_json else data.decode()

        # -- HTTP predictions, with replicated features, feature-logged on Kafka ------------
        candidates = [f"i{i}" for i in range(20)]
        req = {"request_id": "h1", "user_id": "u3", "surface": "feed", "candidates": candidates}
        code, reply = call("POST", "/v1/models/feed:predict", req)
        assert code == 200, reply
        assert reply["version"] == 1 and len(reply["scores"]) == 20
        _, raw, _ = reader.find(
            topics.feature_log, lambda r: json.loads(r[1])["request_id"] == "h1"
        )
        logged = json.loads(raw)
        assert logged["version"] == 1 and logged["user_id"] == "u3"
        assert [i["item_id"] for i in logged["items"]] == candidates
        assert [i["score"] for i in logged["items"]] == reply["scores"]
        first = logged["items"][1]["features"]
        assert first["user_impressions"] == 30 and first["item_category"] == "c1"
        expected = trained_ftrl().predict_proba_many([i["features"] for i in logged["items"]])
        assert reply["scores"] == pytest.approx(list(expected), abs=1e-5)
        key, raw, _ = reader.find(
            topics.predictions, lambda r: json.loads(r[1])["request_id"] == "h1"
        )
        assert key == b"u3" and json.loads(raw) == reply

        # -- the same request through the Open Inference Protocol (tritonclient) ----------
        client = triton.InferenceServerClient(f"127.0.0.1:{app.port}")
        assert client.is_server_ready() and client.is_model_ready("feed", "1")
        inputs = []
        for name, values in (
            ("user_id", ["u3"]),
            ("surface", ["feed"]),
            ("candidates", candidates),
        ):
            tensor = triton.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
            inputs.append(tensor)
        result = client.infer("feed", inputs, request_id="t1")
        client.close()
        oip_scores = result.as_numpy("scores").tolist()
        assert result.get_response()["model_version"] == "1"
        _, raw, _ = reader.find(
            topics.feature_log, lambda r: json.loads(r[1])["request_id"] == "t1"
        )
        assert [i["score"] for i in json.loads(raw)["items"]] == oip_scores
        assert oip_scores == pytest.approx(reply["scores"], abs=1e-6)  # features aged a little

        # -- the request topic: answered, malformed ones dead-lettered --------------------
        topic_req = PredictionRequest(
            request_id="k1", user_id="u1", surface="feed", candidates=["i2"]
        )
        produce(producer, topics.prediction_requests, encode(topic_req), "u1")
        produce(producer, topics.prediction_requests, b'{"request_id": "k2"}', "u2")
        flush(producer)
        _, raw, _ = reader.find(
            topics.predictions, lambda r: json.loads(r[1])["request_id"] == "k1"
        )
        assert json.loads(raw)["model"] == "feed" and len(json.loads(raw)["scores"]) == 1
        reader.find(topics.feature_log, lambda r: json.loads(r[1])["request_id"] == "k1")
        _, _, headers = reader.find(topics.dlq(topics.prediction_requests), lambda r: r[0] == b"u2")
        assert dict(headers)["error.reason"] == b"missing_field"

        # -- a hot swap announced on model-updates ----------------------------------------
        mv2 = publish_ftrl(registry, seed=5)
        update = ModelUpdate(model="feed", version=mv2.version, created_at=time.time())
        produce(producer, topics.model_updates, encode(update), "feed")
        flush(producer)
        wait_for(lambda: call("GET", "/healthz")[1]["models"]["feed"] == 2, 15, "the hot swap")
        code, reply = call("POST", "/v1/models/feed:predict", {**req, "request_id": "h2"})
        assert code == 200 and reply["version"] == 2

        # -- /v1/models and /metrics -------------------------------------------------------
        code, body = call("GET", "/v1/models")
        assert code == 200 and body["models"][0]["serving_version"] == 2
        assert [v["version"] for v in body["models"][0]["versions"]] == [1, 2]
        code, text = call("GET", "/metrics")
        assert code == 200
        assert 'streamlearn_model_swaps_total{model="feed",outcome="swapped"}' in text
        assert 'streamlearn_serving_model_version{model="feed"} 2.0' in text
        assert "streamlearn_feature_replica_records_total" in text
        code, body = call("POST", "/v1/models/feed:predict", {"request_id": "bad"})
        assert code == 400 and "user_id" in body["error"]

        # -- the feature store's online reads, from the same replica ----------------------
        def missing_reads() -> float:
            text = call("GET", "/metrics")[1]
            line = 'streamlearn_feature_reads_total{outcome="missing"} '
            return next((float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)), 0)

        missing = missing_reads()
        code, body = call("GET", "/v1/features")
        assert code == 200 and body["features"] == CATALOG.info()
        code, body = call("GET", "/v1/features/user/u3")
        assert code == 200 and (body["entity"], body["id"], body["as_of"]) == ("user", "u3", 1.0)
        assert body["values"]["user_impressions"] == 30 and body["values"]["user_hides"] == 0
        code, body = call("GET", "/v1/features/item/nope")
        assert code == 404 and "unknown id 'nope'" in body["error"]
        wanted = [{"entity": "item", "id": "i3"}, {"entity": "user", "id": "zz"}]
        code, body = call("POST", "/v1/features:read", {"entities": wanted})
        assert code == 200, body
        assert body["entities"][0]["values"]["item_category"] == "c1"
        assert body["entities"][1] == {"entity": "user", "id": "zz", "values": None, "as_of": None}
        assert missing_reads() == missing + 2
        conn.close()
    reader.consumer.close()


def test_the_request_topic_routes_by_header_and_answers_what_it_cannot_serve(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    _ensure(kafka, topics)
    reader = Reader(kafka, [topics.predictions, topics.feature_log])
    registry = FileRegistry(tmp_path / "registry")
    publish_ftrl(registry, "feed")
    publish_ftrl(registry, "ads", seed=3)
    served = ("feed", "ads", "later")  # "later" has no version yet
    config = ServingConfig(
        project=PROJECT,
        port=0,
        models=served,
        registry_dir=registry.root,
        kafka=kafka,
        state_dir=tmp_path / "state",
        registry_poll_s=0.5,
    )
    producer = make_producer(kafka)

    def ask(request_id: str, surface: str, model: str | None) -> None:
        req = PredictionRequest(request_id, "u1", surface, ["i1", "i2"])  # type: ignore[arg-type]
        headers = None if model is None else [("model", model.encode())]
        producer.produce(topics.prediction_requests, encode(req), "u1", headers=headers)

    def answer(request_id: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        _, raw, headers = reader.find(
            topics.predictions, lambda r: json.loads(r[1])["request_id"] == request_id
        )
        return json.loads(raw), dict(headers or [])

    with ServingApp(config) as app:
        assert (app.service.version("feed"), app.service.version("ads")) == (1, 1)
        assert app.service.version("later") is None
        # one batch: by header (over the surface), by surface, a model not served here,
        # a model served without a version
        ask("by-header-ads", "feed", "ads")
        ask("by-header-feed", "ads", "feed")
        ask("by-surface-ads", "ads", None)
        ask("by-surface-feed", "feed", None)
        ask("not-served", "feed", "vision")
        ask("no-version", "feed", "later")
        flush(producer)
        for rid, model in (
            ("by-header-ads", "ads"),
            ("by-header-feed", "feed"),
            ("by-surface-ads", "ads"),
            ("by-surface-feed", "feed"),
        ):
            reply, headers = answer(rid)
            assert reply["model"] == model and len(reply["scores"]) == 2, reply
            assert "error.status" not in headers
            reader.find(
                topics.feature_log, lambda r, rid=rid: json.loads(r[1])["request_id"] == rid
            )
        error, headers = answer("not-served")
        assert error["status"] == 404 and headers["error.status"] == b"404"
        assert error["models"] == list(served) and "got 'vision'" in error["error"], error
        assert "['feed', 'ads', 'later']" in error["error"]
        error, headers = answer("no-version")
        assert error["status"] == 503 and "'later' has no version" in error["error"], error
        # the others were answered while "later" still had none: nothing was held back
        assert app.service.version("later") is None

        publish_ftrl(registry, "later", seed=5)  # its first version: answered from then on
        wait_for(lambda: app.service.version("later") == 1, 20, "the first version of 'later'")
        ask("later-served", "feed", "later")
        flush(producer)
        reply, _ = answer("later-served")
        assert reply["model"] == "later" and reply["version"] == 1
    reader.consumer.close()
