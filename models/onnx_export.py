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


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _linear_nodes(prefix: str) -> list[onnx.NodeProto]:
    """``{prefix}_sum = Σ_k w[idx_k]·val_k`` (needs initializers ``w`` and ``axes1``)."""
    return [
        helper.make_node("Gather", ["w", "idx"], [f"{prefix}_g"], axis=0),
        helper.make_node("Mul", [f"{prefix}_g", "val"], [f"{prefix}_wx"]),
        helper.make_node("ReduceSum", [f"{prefix}_wx", "axes1"], [f"{prefix}_sum"], keepdims=0),
    ]


def fm_graph(w: np.ndarray, v: np.ndarray, k: int) -> bytes:
    """Factorization machine; slot 0 (bias) enters the linear term only."""
    inits = [
        _const("w", w.astype(np.float32)),
        _const("v", v.astype(np.float32)),
        _const("axes1", np.array([1], dtype=np.int64)),
        _const("axes2", np.array([2], dtype=np.int64)),
        _const("one", np.array([1], dtype=np.int64)),
        _const("kend", np.array([k], dtype=np.int64)),
        _const("half", np.array(0.5, dtype=np.float32)),
    ]
    nodes = [
        *_linear_nodes("lin"),
        helper.make_node("Slice", ["idx", "one", "kend", "axes1"], ["idx_f"]),
        helper.make_node("Slice", ["val", "one", "kend", "axes1"], ["val_f"]),
        helper.make_node("Gather", ["v", "idx_f"], ["v_g"], axis=0),  # [N, K-1, F]
        helper.make_node("Unsqueeze", ["val_f", "axes2"], ["val_f3"]),
        helper.make_node("Mul", ["v_g", "val_f3"], ["xv"]),
        helper.make_node("ReduceSum", ["xv", "axes1"], ["s"], keepdims=0),  # [N, F]
        helper.make_node("Mul", ["s", "s"], ["s2"]),
        helper.make_node("Mul", ["xv", "xv"], ["xv2"]),
        helper.make_node("ReduceSum", ["xv2", "axes1"], ["sq"], keepdims=0),
        helper.make_node("Sub", ["s2", "sq"], ["diff"]),
        helper.make_node("ReduceSum", ["diff", "axes1"], ["pair2"], keepdims=0),
        helper.make_node("Mul", ["pair2", "half"], ["pair"]),
        helper.make_node("Add", ["lin_sum", "pair"], ["margin"]),
        helper.make_node("Sigmoid", ["margin"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, "fm", _inputs(k), [_prob_output()], initializer=inits)
    return serialize(make_model(graph))


def deep_graph(
    w: np.ndarray, emb: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]], k: int
) -> bytes:
    """Wide & deep: ``Σ w[idx]·val`` + MLP(flatten(emb[idx]·val)); ReLU between layers.

    ``layers`` holds ``(weight [out, in], bias [out])`` pairs; the last has ``out = 1``.
    """
    inits = [
        _const("w", w.astype(np.float32)),
        _const("emb", emb.astype(np.float32)),
        _const("axes1", np.array([1], dtype=np.int64)),
        _const("axes2", np.array([2], dtype=np.int64)),
    ]
    nodes = [
        *_linear_nodes("wide"),
        helper.make_node("Gather", ["emb", "idx"], ["e_g"], axis=0),  # [N, K, D]
        helper.make_node("Unsqueeze", ["val", "axes2"], ["val3"]),
        helper.make_node("Mul", ["e_g", "val3"], ["ex"]),
        helper.make_node("Flatten", ["ex"], ["h0"], axis=1),
    ]
    h = "h0"
    for i, (weight, bias) in enumerate(layers):
        inits += [
            _const(f"W{i}", weight.astype(np.float32)),
            _const(f"b{i}", bias.astype(np.float32)),
        ]
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        h = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"h{i + 1}"]))
            h = f"h{i + 1}"
    nodes += [
        helper.make_node("ReduceSum", [h, "axes1"], ["deep_sum"], keepdims=0),
        helper.make_node("Add", ["wide_sum", "deep_sum"], ["margin"]),
        helper.make_node("Sigmoid", ["margin"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, "deep", _inputs(k), [_prob_output()], initializer=inits)
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
