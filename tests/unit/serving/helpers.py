"""Models, features and sinks for serving tests (no broker, no torch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamlearn.models import zoo
from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.models.snapshot import Snapshot
from streamlearn.serving.candidates import FeatureLog
from streamlearn.streams.contracts import (
    FeatureLogRecord,
    PredictionReply,
    PredictionRequest,
    Scalar,
    decode,
)
from tests.example import feed_spec

SPEC: FeatureSpec = feed_spec(hash_bits=12)


def trained_ftrl(seed: int = 0, n: int = 200) -> Any:
    """An FTRL learner that has learnt something (clicks on item i1)."""
    learner = zoo.create("ftrl", SPEC, seed=seed)
    rng = np.random.default_rng(seed)
    rows = [
        {"user_id": f"u{rng.integers(5)}", "item_id": f"i{rng.integers(3)}", "surface": "feed"}
        for _ in range(n)
    ]
    learner.learn_many(rows, [float(r["item_id"] == "i1") for r in rows])
    return learner


def publish_ftrl(registry: FileRegistry, model: str = "feed", seed: int = 0) -> ModelVersion:
    """Publish a trained FTRL snapshot as the next version of ``model``."""
    return registry.publish(model, trained_ftrl(seed).snapshot())


def publish_raw(
    registry: FileRegistry, onnx_bytes: bytes, metadata: dict[str, Any], model: str = "feed"
) -> ModelVersion:
    """Publish arbitrary bytes and metadata (for corrupt snapshots)."""
    return registry.publish(model, Snapshot(onnx=onnx_bytes, state=b"", metadata=metadata))


def ctr_metadata() -> dict[str, Any]:
    return {
        "learner": "test",
        "params": {},
        "feature_spec": SPEC.to_dict(),
        "kind": "ctr",
        "inputs": ["idx", "val"],
        "output": "prob",
    }


def constant_graph(value: float, output: str = "prob") -> bytes:
    """A CTR graph answering ``value`` for every row (NaN makes a bad snapshot)."""
    k = SPEC.n_slots
    inputs = [
        helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", k]),
        helper.make_tensor_value_info("val", TensorProto.FLOAT, ["N", k]),
    ]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"])
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(value, dtype=np.float32), "c"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["val", "axes"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["z", "c"], [output]),
    ]
    graph = helper.make_graph(nodes, "const", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


VISION_SHAPE = (1, 4, 4)
VISION_CLASSES = ["dark", "mid", "bright"]


def vision_graph() -> bytes:
    """Softmax over 3 classes of a linear map of the mean pixel of a ``[N, 1, 4, 4]`` image."""
    c, h, w = VISION_SHAPE
    weights = np.zeros((c * h * w, 3), dtype=np.float32)
    weights[:, 0] = -1.0
    weights[:, 2] = 1.0
    inits = [numpy_helper.from_array(weights, "w")]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "vision",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def vision_metadata() -> dict[str, Any]:
    return {
        "learner": "cnn",
        "params": {},
        "feature_spec": {},
        "kind": "vision",
        "inputs": ["image"],
        "output": "probs",
        "classes": VISION_CLASSES,
        "input_shape": list(VISION_SHAPE),
        "mean": [0.5],
        "std": [0.25],
    }


class DictFeatures:
    """A feature source backed by two dicts."""

    def __init__(
        self,
        users: Mapping[str, dict[str, Scalar]] | None = None,
        items: Mapping[str, dict[str, Scalar]] | None = None,
    ) -> None:
        self.users = dict(users or {})
        self.items_ = dict(items or {})

    def user(self, user_id: str) -> dict[str, Scalar] | None:
        return self.users.get(user_id)

    def item(self, item_id: str) -> dict[str, Scalar] | None:
        return self.items_.get(item_id)

    def items(self, item_ids: list[str]) -> list[dict[str, Scalar] | None]:
        return [self.items_.get(i) for i in item_ids]


class ListSink:
    """Collects what serving publishes, the feature-log records as the topic's readers
    decode them."""

    def __init__(self) -> None:
        self.published: list[tuple[PredictionReply, FeatureLogRecord]] = []

    def log_prediction(self, reply: PredictionReply, record: FeatureLog) -> None:
        self.published.append((reply, decode(FeatureLogRecord, record.encode())))


def request(
    candidates: list[str], user_id: str = "u1", request_id: str = "r1"
) -> PredictionRequest:
    return PredictionRequest(
        request_id=request_id,
        user_id=user_id,
        surface="feed",
        candidates=candidates,
        context={"hour": 9},
    )
