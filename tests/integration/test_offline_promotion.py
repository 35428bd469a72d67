"""Promotion and rollback, seen through the registry and by a running server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr
from sklearn.datasets import load_digits

from streamlearn.models.registry import FileRegistry
from streamlearn.models.stages import promote, rollback
from streamlearn.offline.promotion import announce
from streamlearn.offline.vision import VisionConfig, train_vision
from streamlearn.serving.app import ServingApp, ServingConfig
from streamlearn.streams.contracts import ModelUpdate, decode
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from tests.example import PROJECT

pytestmark = pytest.mark.integration


def _served_version(url: str, image: list[list[float]]) -> tuple[int, list[float], list[str]]:
    r = httpx.post(
        f"{url}/v1/models/digits:predict", json={"request_id": "r1", "image": image}, timeout=5
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["version"], body["probs"], body["classes"]


def _wait_for(url: str, image: list[list[float]], version: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := _served_version(url, image)[0]) != version:
        assert time.monotonic() < deadline, f"server still serves version {got}, expected {version}"
        time.sleep(0.2)


def test_vision_served_and_promotion_rollback_seen_by_server(
    kafka: KafkaConfig, topics: Topics, tmp_path: Path
) -> None:
    reg = FileRegistry(tmp_path / "registry")
    for seed in (0, 1):
        train_vision(
            VisionConfig(dataset="digits", size=8, epochs=4, seed=seed),
            tmp_path / "ckpt",
            reg,
            "digits",
        )
    assert promote(reg, "digits", 1).previous is None
    assert reg.serving_version("digits").version == 1  # type: ignore[union-attr]

    d = load_digits()
    image = (d.images[0] * 255 / 16).round().tolist()  # an 8x8 "0", pixels 0..255
    cfg = ServingConfig(
        project=PROJECT,
        registry_dir=reg.root,
        kafka=kafka,
        state_dir=tmp_path / "state",
        port=0,
        models=("digits",),
        registry_poll_s=0.5,
        admin_token=SecretStr("t0ken"),
    )
    with ServingApp(cfg).start() as app:
        version, probs, classes = _served_version(app.url, image)
        assert version == 1 and classes == [str(i) for i in range(10)]
        assert int(np.argmax(probs)) == 0 and abs(sum(probs) - 1) < 1e-4

        # The same image through the Open Inference Protocol, with tritonclient.
        client = triton.InferenceServerClient(f"127.0.0.1:{app.port}")
        assert client.is_server_live() and client.is_model_ready("digits")
        meta = client.get_model_metadata("digits")
        assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
        assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
        tensor = triton.InferInput("image", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(np.asarray(image, np.float32)[None, None])
        result = client.infer("digits", [tensor])
        assert result.as_numpy("probs")[0].tolist() == probs
        client.close()

        change = promote(reg, "digits", 2)
        announce(kafka, reg, change)
        assert reg.serving_version("digits").version == 2  # type: ignore[union-attr]
        _wait_for(app.url, image, 2)

        back = rollback(reg, "digits")
        assert (back.version, back.previous) == (1, 2)
        announce(kafka, reg, back)
        assert reg.serving_version("digits").version == 1  # type: ignore[union-attr]
        assert reg.get("digits", 2).stage == "archived"
        _wait_for(app.url, image, 1)

        # Admin over HTTP: reject version 2; the token is required.
        url = f"{app.url}/v1/models/digits/versions/2:reject"
        assert httpx.post(url, timeout=5).status_code == 401
        r = httpx.post(url, headers={"Authorization": "Bearer t0ken"}, timeout=5)
        assert r.status_code == 200 and r.json()["serving_version"] == 1, r.text
        assert reg.get("digits", 2).stage == "rejected"

    c = Consumer(kafka.consumer_conf("check-updates", **{"enable.partition.eof": True}))
    c.assign([TopicPartition(topics.model_updates, 0, 0)])
    updates = []
    while len(updates) < 3:
        m = c.poll(5)
        assert m is not None, "expected three stage announcements on the model-updates topic"
        if m.error() is None:
            updates.append(decode(ModelUpdate, m.value()))
    c.close()
    assert [(u.kind, u.version, u.metrics["stage"]) for u in updates] == [
        ("stage", 2, "production"),
        ("stage", 1, "production"),
        ("stage", 2, "rejected"),  # announced by serving's admin endpoint
    ]
