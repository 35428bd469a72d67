"""The HTTP API on the real server (uvicorn) over loopback, without a broker."""

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.models.snapshot import Snapshot
from streamlearn.serving.http import MAX_BODY_BYTES, build_api
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.serving.service import PredictionService
from tests.example import CATALOG
from tests.unit.serving.helpers import (
    DictFeatures,
    ListSink,
    constant_graph,
    ctr_metadata,
    publish_ftrl,
    publish_raw,
    vision_graph,
    vision_metadata,
)

REQUEST = {"request_id": "r1", "user_id": "u1", "surface": "feed", "candidates": ["i1", "i2"]}


class Api:
    def __init__(
        self, server: HttpServer, service: PredictionService, sink: ListSink, registry: FileRegistry
    ) -> None:
        self.server = server
        self.service = service
        self.sink = sink
        self.registry = registry
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=raw, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        is_json = resp.getheader("Content-Type") == "application/json"
        return resp.status, json.loads(data) if is_json else data.decode(), resp


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed", "digits"], CATALOG)
    sink = ListSink()
    server = HttpServer(build_api(service, sink), "127.0.0.1", 0, HttpLimits()).start()
    client = Api(server, service, sink, registry)
    yield client
    client.conn.close()
    server.stop()


def test_predict_on_one_keep_alive_connection(api: Api) -> None:
    code, body, _ = api.call("POST", "/v1/models/feed:predict", REQUEST)
    assert code == 503 and "no version loaded yet" in body["error"]
    api.service.load(publish_ftrl(api.registry))
    for n in range(3):
        code, body, resp = api.call(
            "POST", "/v1/models/feed:predict", {**REQUEST, "request_id": f"r{n}"}
        )
        assert code == 200, body
        assert resp.getheader("Connection") is None  # kept alive
        assert body["request_id"] == f"r{n}" and body["model"] == "feed" and body["version"] == 1
        assert len(body["scores"]) == 2
    assert len(api.sink.published) == 3
    reply, log = api.sink.published[-1]
    assert reply.scores == body["scores"] and [i.item_id for i in log.items] == ["i1", "i2"]


@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        ("/v1/models/feed:predict", b"{not json", 400, "got: expected JSON"),
        ("/v1/models/feed:predict", {"request_id": "r"}, 400, "missing required field `user_id`"),
        (
            "/v1/models/feed:predict",
            {**REQUEST, "candidates": "i1"},
            400,
            "Expected `array`, got `str`",
        ),
        ("/v1/models/feed:predict", {**REQUEST, "surface": "tv"}, 400, "got 'tv'"),
        ("/v1/models/feed:predict", {**REQUEST, "candidates": []}, 400, "at least one candidate"),
        ("/v1/models/ads:predict", REQUEST, 404, "among ['feed', 'digits'], got 'ads'"),
        ("/v1/models/feed", REQUEST, 405, "expected GET for /v1/models/feed, got POST"),
    ],
)
def test_bad_requests_say_what_was_expected(
    api: Api, path: str, body: Any, code: int, message: str
) -> None:
    api.service.load(publish_ftrl(api.registry))
    got, reply, _ = api.call("POST", path, body)
    assert got == code and message in reply["error"], reply
    if code == 400 and path.endswith(":predict"):
        assert reply["error"].startswith('expected {"request_id": str')
    got, reply, _ = api.call("GET", "/healthz")  # the connection is still usable
    assert got == 200
    assert api.sink.published == []


def test_body_length_errors_close_the_connection(api: Api) -> None:
    code, body, resp = api.call(
        "POST", "/v1/models/feed:predict", headers={"Content-Length": str(MAX_BODY_BYTES + 1)}
    )
    assert code == 413 and "at most" in body["error"] and resp.getheader("Connection") == "close"
    api.conn.close()
    api.conn.putrequest("POST", "/v1/models/feed:predict")
    api.conn.endheaders()
    resp = api.conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]


def test_models_health_and_metrics(api: Api) -> None:
    api.service.load(publish_ftrl(api.registry))
    api.registry.set_stage("feed", 1, "production")
    api.call("POST", "/v1/models/feed:predict", REQUEST)
    code, body, _ = api.call("GET", "/v1/models")
    assert code == 200
    feed, digits = body["models"]
    assert feed["name"] == "feed" and feed["serving_version"] == 1 and feed["kind"] == "ctr"
    assert feed["versions"][0]["version"] == 1 and feed["versions"][0]["stage"] == "production"
    assert digits == {"name": "digits", "kind": None, "serving_version": None, "versions": []}
    code, body, _ = api.call("GET", "/healthz")
    assert code == 200 and body == {"status": "ok", "models": {"feed": 1, "digits": None}}
    code, text, resp = api.call("GET", "/metrics")
    assert code == 200 and resp.getheader("Content-Type").startswith("text/plain")
    assert 'streamlearn_predictions_total{model="feed"}' in text
    assert 'streamlearn_predict_latency_seconds_bucket{le="0.0005",model="feed"}' in text
    assert 'streamlearn_serving_model_version{model="feed"} 1.0' in text
    assert 'streamlearn_http_requests_total{code="200"}' in text
    code, body, _ = api.call("GET", "/nope")
    assert code == 404 and "expected GET" in body["error"]
    code, body, resp = api.call("GET", "/v1/models/feed:predict")
    assert code == 405 and "expected POST" in body["error"]


def test_vision_over_http(api: Api) -> None:
    api.service.load(publish_raw(api.registry, vision_graph(), vision_metadata(), model="digits"))
    code, body, _ = api.call(
        "POST", "/v1/models/digits:predict", {"request_id": "v", "image": [[200] * 4] * 4}
    )
    assert code == 200 and body["classes"] == ["dark", "mid", "bright"] and len(body["probs"]) == 3
    code, body, _ = api.call("POST", "/v1/models/digits:predict", [1, 2])
    assert code == 400 and body["error"] == "expected a JSON object, got list"
    assert api.sink.published == []  # vision replies are not feature-logged


def test_openapi_document_is_generated_from_the_routes_and_structs(api: Api) -> None:
    code, doc, _ = api.call("GET", "/openapi.json")
    assert code == 200 and doc["openapi"] == "3.1.0"
    predict = doc["paths"]["/v1/models/{model}:predict"]["post"]
    assert predict["parameters"] == [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body == {
        "oneOf": [
            {"$ref": "#/components/schemas/PredictionRequest"},
            {"$ref": "#/components/schemas/VisionRequest"},
        ]
    }
    assert set(predict["responses"]) == {"200", "400", "404", "411", "413", "503"}
    schemas = doc["components"]["schemas"]
    assert schemas["PredictionRequest"]["required"] == [
        "request_id",
        "user_id",
        "surface",
        "candidates",
    ]
    assert schemas["ErrorReply"]["properties"] == {"error": {"type": "string"}}
    assert "InferenceRequest" in schemas and "ModelMetadata" in schemas
    promote = doc["paths"]["/v1/models/{model}/versions/{version}:promote"]["post"]
    assert promote["security"] == [{"bearer": []}] and "requestBody" not in promote
    assert "/v2/models/{model}/versions/{version}/infer" in doc["paths"]
    assert doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }


def test_a_candidate_is_scored_as_a_shadow_and_the_model_detail_shows_it(api: Api) -> None:
    """Production answers; the newest candidate's scores go to the feature log only;
    ``GET /v1/models/{model}`` gives every version's stage, live figures and decision."""
    from streamlearn.models.stages import reject
    from streamlearn.serving.updates import ModelUpdater

    publish_ftrl(api.registry)  # 1: production (served as the newest)
    snap = Snapshot(constant_graph(0.25), b"", ctr_metadata())
    cand = api.registry.publish("feed", snap, {"origin": "offline"}, stage="candidate")
    updater = ModelUpdater(api.service, None)
    updater.check_all()
    assert api.service.version("feed") == 1 and api.service.shadow_version("feed") == cand.version
    code, body, _ = api.call("POST", "/v1/models/feed:predict", REQUEST)
    assert code == 200 and body["version"] == 1 and 0.25 not in body["scores"]
    _, record = api.sink.published[-1]
    assert record.version == 1 and record.shadow_version == cand.version
    assert [i.shadow_score for i in record.items] == [0.25, 0.25]
    assert [i.score for i in record.items] == body["scores"]
    api.registry.write_evaluation(
        "feed", 1, {"traffic": {"served": {"count": 10, "positives": 2, "auc": 0.7,
                                           "logloss": 0.4, "ne": 0.9, "calibration": 1.1}}},
    )  # fmt: skip
    reject(api.registry, "feed", cand.version, "NE worse", {"candidate_ne": 1.2})
    code, body, _ = api.call("GET", "/v1/models/feed")
    assert code == 200 and body["serving_version"] == 1 and body["shadow_version"] == 2
    v1, v2 = body["versions"]
    assert v1["serving"] and v1["evaluation"]["served"]["auc"] == 0.7
    assert v2["stage"] == "rejected" and v2["origin"] == "offline"
    assert (
        v2["decision"]["reason"] == "NE worse" and v2["decision"]["figures"]["candidate_ne"] == 1.2
    )
    updater.check_all()  # the rejected candidate is no longer scored
    assert api.service.shadow_version("feed") is None
    api.call("POST", "/v1/models/feed:predict", REQUEST)
    assert api.sink.published[-1][1].shadow_version is None
    code, body, _ = api.call("GET", "/v1/models/nope")
    assert code == 404 and "among" in body["error"]
