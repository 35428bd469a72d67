"""The Open Inference Protocol, spoken by the official ``tritonclient.http`` client.

The server is the real one (uvicorn) over loopback; features come from an in-memory
source. Scores must equal ``/v1``'s for the same request, and OIP predictions must be
feature-logged like ``/v1``'s.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.http import build_api
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.serving.service import PredictionService
from tests.example import CATALOG
from tests.unit.serving.helpers import (
    VISION_CLASSES,
    DictFeatures,
    ListSink,
    publish_ftrl,
    publish_raw,
    vision_graph,
    vision_metadata,
)

USERS = {"u1": {"user_impressions": 10, "user_ctr": 0.2, "user_last_event_ts": 1.0}}
ITEMS = {f"i{i}": {"item_impressions": i, "item_category": f"c{i % 3}"} for i in range(5)}
CANDIDATES = ["i0", "i1", "i2", "i3", "i4"]


class Served:
    def __init__(self, tmp: Path) -> None:
        self.registry = FileRegistry(tmp)
        self.service = PredictionService(
            self.registry,
            DictFeatures(USERS, ITEMS),
            ["feed", "digits"],
            CATALOG,
            clock=lambda: 100.0,
        )
        self.sink = ListSink()
        api = build_api(self.service, self.sink)
        self.server = HttpServer(api, "127.0.0.1", 0, HttpLimits()).start()
        self.client = triton.InferenceServerClient(f"127.0.0.1:{self.server.port}")

    def v1(self, path: str, body: Any) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        data = json.loads(resp.read())
        conn.close()
        return resp.status, data

    def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.client.close()
    s.server.stop()


def _ctr_inputs(binary: bool, candidates: list[str] = CANDIDATES) -> list[triton.InferInput]:
    out = []
    for name, values in (("user_id", ["u1"]), ("surface", ["feed"]), ("candidates", candidates)):
        tensor = triton.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=np.object_), binary_data=binary)
        out.append(tensor)
    return out


def test_health_and_metadata(served: Served) -> None:
    c = served.client
    assert c.is_server_live()
    assert not c.is_server_ready()  # no model has a version yet
    assert not c.is_model_ready("feed")
    with pytest.raises(InferenceServerException, match="no version loaded yet") as err:
        c.get_model_metadata("feed")
    assert err.value.status() == "503"
    served.service.load(publish_ftrl(served.registry))
    served.service.load(
        publish_raw(served.registry, vision_graph(), vision_metadata(), model="digits")
    )
    assert c.is_server_ready()
    assert c.is_model_ready("feed") and c.is_model_ready("feed", "1")
    assert not c.is_model_ready("feed", "2")
    meta = c.get_server_metadata()
    assert meta["name"] == "streamlearn" and meta["extensions"] == ["binary_tensor_data"]
    assert isinstance(meta["version"], str)
    assert c.get_model_metadata("feed") == {
        "name": "feed",
        "versions": ["1"],
        "platform": "streamlearn_ctr",
        "inputs": [
            {"name": "user_id", "datatype": "BYTES", "shape": [1]},
            {"name": "surface", "datatype": "BYTES", "shape": [1]},
            {"name": "candidates", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1]}],
    }
    assert c.get_model_metadata("digits", "1") == {
        "name": "digits",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 4, 4]}],
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}],
    }
    with pytest.raises(InferenceServerException, match="among") as err:
        c.get_model_metadata("ads")
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException, match="expected version 1") as err:
        c.get_model_metadata("feed", "7")
    assert err.value.status() == "404"
    # Health answers carry no body, as the protocol says.
    assert served.raw("GET", "/v2/health/live") == (200, b"")
    assert served.raw("GET", "/v2/models/feed/versions/3/ready") == (400, b"")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_ctr_infer_equals_v1_and_is_feature_logged(served: Served, binary: bool) -> None:
    served.service.load(publish_ftrl(served.registry))
    body = {"request_id": "r1", "user_id": "u1", "surface": "feed", "candidates": CANDIDATES}
    code, v1 = served.v1("/v1/models/feed:predict", body)
    assert code == 200, v1
    outputs = [triton.InferRequestedOutput("scores", binary_data=binary)]
    result = served.client.infer("feed", _ctr_inputs(binary), outputs=outputs, request_id="r2")
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (5,)
    assert scores.tolist() == v1["scores"]  # exactly the same numbers
    response = result.get_response()
    assert response["model_name"] == "feed" and response["model_version"] == "1"
    assert response["id"] == "r2"
    (_, v1_log), (reply, oip_log) = served.sink.published
    assert reply.request_id == "r2" and reply.scores == v1["scores"]
    assert [i.item_id for i in oip_log.items] == CANDIDATES
    assert [i.features for i in oip_log.items] == [i.features for i in v1_log.items]
    # tritonclient's defaults: binary inputs, all outputs binary, no request id.
    default = served.client.infer("feed", _ctr_inputs(True), model_version="1")
    assert default.as_numpy("scores").tolist() == v1["scores"]
    assert len(default.get_response()["id"]) == 32  # one was made up (it keys the log)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_vision_infer_equals_v1(served: Served, binary: bool) -> None:
    served.service.load(
        publish_raw(served.registry, vision_graph(), vision_metadata(), model="digits")
    )
    images = [[[0.0] * 4] * 4, [[250.0] * 4] * 4, [[128.0] * 4] * 4]
    v1 = [
        served.v1("/v1/models/digits:predict", {"request_id": f"v{i}", "image": img})[1]
        for i, img in enumerate(images)
    ]
    tensor = triton.InferInput("image", [3, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(images, np.float32)[:, None], binary_data=binary)
    result = served.client.infer(
        "digits", [tensor], outputs=[triton.InferRequestedOutput("probs", binary_data=binary)]
    )
    probs = result.as_numpy("probs")
    assert probs.shape == (3, len(VISION_CLASSES)) and probs.dtype == np.float32
    assert probs.tolist() == [r["probs"] for r in v1]
    assert np.argmax(probs, axis=1).tolist()[:2] == [0, 2]  # dark, bright
    assert served.sink.published == []  # vision answers are not feature-logged


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "expected an inference request"),
        (b'{"inputs": 3}', "Expected `array`, got `int`"),
        (
            b'{"inputs": [{"name": "user_id", "shape": [-1], "datatype": "BYTES", "data": ["u"]}]}',
            "Expected `int` >= 0",
        ),
        (
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES"}]}',
            "expected data or binary_data_size",
        ),
        (
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            "of datatype BYTES, got 'FP32'",
        ),
        (
            b'{"inputs": [{"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["u"]}]}',
            "expected 2 elements",
        ),
        (
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [1]}]}',
            "data as strings",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["u"]}]}',
            "got also ['x']",
        ),
        (b'{"inputs": []}', "expected an input named 'user_id'"),
        (
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u"]},'
            b'{"name": "surface", "shape": [1], "datatype": "BYTES", "data": ["tv"]},'
            b'{"name": "candidates", "shape": [1], "datatype": "BYTES", "data": ["i1"]}]}',
            "expected a valid prediction request",
        ),
        (
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u"]},'
            b'{"name": "surface", "shape": [1], "datatype": "BYTES", "data": ["feed"]},'
            b'{"name": "candidates", "shape": [0], "datatype": "BYTES", "data": []}]}',
            "at least one candidate",
        ),
    ],
)
def test_bad_inference_requests_are_400_with_the_protocols_error(
    served: Served, body: bytes, message: str
) -> None:
    served.service.load(publish_ftrl(served.registry))
    code, data = served.raw("POST", "/v2/models/feed/infer", body)
    assert code == 400 and message in json.loads(data)["error"], data
    assert set(json.loads(data)) == {"error"}


def test_wrong_version_unknown_output_and_binary_size(served: Served) -> None:
    served.service.load(publish_ftrl(served.registry))
    with pytest.raises(InferenceServerException, match="expected version 1") as err:
        served.client.infer("feed", _ctr_inputs(False), model_version="2")
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException, match="expected outputs among") as err:
        served.client.infer(
            "feed", _ctr_inputs(False), outputs=[triton.InferRequestedOutput("prob")]
        )
    assert err.value.status() == "400"
    inputs = _ctr_inputs(True)
    body = json.dumps(
        {"inputs": [{**i._get_tensor(), "parameters": {"binary_data_size": 99}} for i in inputs]}
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request(
        "POST",
        "/v2/models/feed/infer",
        body=body + b"x",
        headers={"Inference-Header-Content-Length": str(len(body))},
    )
    resp = conn.getresponse()
    assert resp.status == 400 and "bytes of binary data" in json.loads(resp.read())["error"]
