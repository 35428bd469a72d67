"""ONNX graphs for the learners, built with ``onnx.helper`` (deterministic bytes).

Every graph takes ``idx`` (int64 ``[N, K]``) and ``val`` (float32 ``[N, K]``) and
returns ``prob`` (float32 ``[N]``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
PRODUCER = "streamlearn.models"


def _inputs(k: int) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", k]),
        helper.make_tensor_value_info("val", TensorProto.FLOAT, ["N", k]),
    ]


def _prob_output() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N"])


def serialize(model: onnx.ModelProto) -> bytes:
    """Check ``model`` and serialise it deterministically."""
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Wrap ``graph`` in a model with the project's opset and producer."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER
    )
    model.ir_version = 8
    return model


def linear_graph(weights: np.ndarray, k: int, name: str) -> bytes:
    """Logistic regression over hashed slots: ``sigmoid(sum_k w[idx] * val)``."""
    w = numpy_helper.from_array(np.ascontiguousarray(weights, dtype=np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["w", "idx"], ["w_g"], axis=0),
        helper.make_node("Mul", ["w_g", "val"], ["wx"]),
        helper.make_node("ReduceSum", ["wx", "axes"], ["margin"], keepdims=0),
        helper.make_node("Sigmoid", ["margin"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, name, _inputs(k), [_prob_output()], initializer=[w, axes])
    return serialize(make_model(graph))


def with_downsampling_correction(model_bytes: bytes, rate: float) -> bytes:
    """Append ``p = r·p' / (r·p' + 1 − p')`` to a graph trained on negatives kept at ``rate``."""
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["prob_sampled" if o == "prob" else o for o in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(rate, dtype=np.float32), "ds_rate"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "ds_one"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Mul", ["prob_sampled", "ds_rate"], ["ds_num"]),
            helper.make_node("Sub", ["ds_one", "prob_sampled"], ["ds_neg"]),
            helper.make_node("Add", ["ds_num", "ds_neg"], ["ds_den"]),
            helper.make_node("Div", ["ds_num", "ds_den"], ["prob"]),
        ]
    )
    return serialize(model)
