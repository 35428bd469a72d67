"""The Open Inference Protocol (KServe v2, REST) next to the native API.

Clients written for Triton, KServe, Seldon MLServer or OpenVINO Model Server (for example
``tritonclient.http``) talk to streamlearn unchanged:

* ``GET /v2/health/live`` and ``GET /v2/health/ready`` (200, or 400 while a served model
  has no version loaded), ``GET /v2/models/{model}[/versions/{v}]/ready``: empty bodies,
  the status says it;
* ``GET /v2`` — server metadata: name, version and extensions (``binary_tensor_data``);
* ``GET /v2/models/{model}[/versions/{v}]`` — model metadata: platform, versions, and
  the inputs and outputs with datatype and shape (``-1``: any size);
* ``POST /v2/models/{model}[/versions/{v}]/infer`` — inference.

A CTR model (platform ``streamlearn_ctr``: features looked up in the feature replica,
hashed, scored by onnxruntime) takes ``user_id`` (BYTES ``[1]``), ``surface`` (BYTES
``[1]``) and ``candidates`` (BYTES ``[N]``); the request ``id`` is the request id (one is
made up and returned when absent); the output is ``scores`` (FP32 ``[N]``). It is the
same prediction as ``POST /v1/models/{model}:predict``, feature-logged the same way. A
vision model (platform ``onnxruntime_onnx``) takes ``image`` (FP32 ``[N, C, H, W]``,
pixels 0–1, or 0–255 per image as in ``/v1``) and gives ``probs`` (FP32 ``[N, K]``, in
the order of the classes in ``/v1/models``).

Tensor data is JSON (flat or nested, row-major) or, with the binary tensor data
extension, raw little-endian bytes after the JSON header (``Inference-Header-Content-Length``;
BYTES elements each prefixed by a 4-byte little-endian length). Outputs are binary when
the request asks (``binary_data_output``, or ``binary_data`` on an output), as
``tritonclient`` does by default. Only the version serving now can be named in a URL:
``versions`` in the metadata lists it. Not supported: the classification and shared
memory extensions, request ``parameters`` other than ``binary_data_output`` (ignored),
gRPC. Errors are ``{"error": "..."}`` with the status of :mod:`streamlearn.serving.errors` (400 bad
request, 404 unknown model or version, 503 no version loaded yet).
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Collection, Sequence
from typing import Annotated, Any, Final

import msgspec
import numpy as np

from streamlearn import __version__
from streamlearn.serving.errors import BadRequest, ModelNotFound
from streamlearn.serving.routing import Request, Response, Router
from streamlearn.serving.schema import ErrorReply
from streamlearn.serving.service import ModelSession, PredictionService
from streamlearn.serving.sink import Sink
from streamlearn.streams.contracts import PredictionRequest, validate_request
from streamlearn.streams.errors import ContractError

TAG: Final = "v2 (Open Inference Protocol)"
SERVER_NAME: Final = "streamlearn"
EXTENSIONS: Final = ("binary_tensor_data",)
PLATFORMS: Final = {"ctr": "streamlearn_ctr", "vision": "onnxruntime_onnx"}
_UNSUPPORTED_OUTPUT_PARAMS: Final = ("classification", "shared_memory_region")
_U32: Final = struct.Struct("<I")


class MetadataTensor(msgspec.Struct, frozen=True):
    """An input or output: name, datatype (``BYTES``, ``FP32``, …), shape (-1: any)."""

    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(msgspec.Struct, frozen=True):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class ModelMetadata(msgspec.Struct, frozen=True):
    """``GET /v2/models/{model}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


Parameters = dict[str, str | int | float | bool]


class RequestInput(msgspec.Struct, frozen=True, kw_only=True):
    """An input tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes."""

    name: str
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    datatype: str
    parameters: Parameters = {}
    data: Any = None


class RequestOutput(msgspec.Struct, frozen=True, kw_only=True):
    """An output asked for; ``parameters.binary_data`` asks for it in binary."""

    name: str
    parameters: Parameters = {}


class InferenceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v2/models/{model}/infer``: the inputs, and optionally which outputs."""

    id: str | None = None
    parameters: Parameters = {}
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An output tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer to an inference request."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


_DECODER: Final = msgspec.json.Decoder(InferenceRequest)
_ENCODER: Final = msgspec.json.Encoder()
_CTR_INPUTS: Final = ("user_id", "surface", "candidates")


def server_version() -> str:
    """The streamlearn version."""
    return __version__


def model_metadata(sess: ModelSession) -> ModelMetadata:
    """What a model takes and gives, in the protocol's terms."""
    if sess.kind == "ctr":
        inputs = [
            MetadataTensor("user_id", "BYTES", [1]),
            MetadataTensor("surface", "BYTES", [1]),
            MetadataTensor("candidates", "BYTES", [-1]),
        ]
        outputs = [MetadataTensor("scores", "FP32", [-1])]
    else:
        inputs = [MetadataTensor("image", "FP32", [-1, *sess.input_shape])]
        outputs = [MetadataTensor("probs", "FP32", [-1, len(sess.classes)])]
    return ModelMetadata(
        sess.model, [str(sess.version)], PLATFORMS[str(sess.kind)], inputs, outputs
    )


def oip_routes(service: PredictionService, sink: Sink | None) -> Router:
    """The protocol's routes over ``service``; CTR predictions go to ``sink`` like ``/v1``'s."""
    router = Router()
    empty = {200: None, 400: None}

    @router.route("GET", "/v2/health/live", summary="Server live.", tag=TAG, responses={200: None})
    def live(req: Request) -> Response:
        return Response(200)

    @router.route(
        "GET", "/v2/health/ready", summary="Every served model ready.", tag=TAG, responses=empty
    )
    def ready(req: Request) -> Response:
        return Response(200 if all(service.version(m) for m in service.models) else 400)

    @router.route(
        "GET", "/v2", summary="Server metadata.", tag=TAG, responses={200: ServerMetadata}
    )
    def server(req: Request) -> Response:
        meta = ServerMetadata(SERVER_NAME, server_version(), list(EXTENSIONS))
        return Response(200, _ENCODER.encode(meta))

    def model_ready(req: Request) -> Response:
        model = req.params["model"]
        if model not in service.models:
            raise ModelNotFound(f"expected a model among {list(service.models)}, got {model!r}")
        loaded = service.version(model)
        wanted = _version(req)
        return Response(200 if loaded and wanted in (None, loaded) else 400)

    def model_meta(req: Request) -> Response:
        sess = service.session(req.params["model"], _version(req))
        return Response(200, _ENCODER.encode(model_metadata(sess)))

    def infer(req: Request) -> Response:
        model, version = req.params["model"], _version(req)
        kind = service.session(model, version).kind
        inference, tensors = _decode(req)
        if kind == "ctr":
            request_id = inference.id or uuid.uuid4().hex
            request = _ctr_request(request_id, tensors, service.catalog.schema.surfaces)
            reply, record = service.predict(model, request, version)
            if sink is not None:
                sink.log_prediction(reply, record)
            outputs = {"scores": np.asarray(reply.scores, np.float32)}
            return _answer(inference, model, reply.version, request_id, outputs)
        _only(tensors, ("image",))
        used, probs = service.classify(model, _fp32(_input(tensors, "image")), version)
        return _answer(inference, model, used.version, inference.id, {"probs": probs})

    for suffix in ("", "/versions/{version}"):
        base = "/v2/models/{model}" + suffix
        router.route("GET", base + "/ready", summary="Model ready.", tag=TAG, responses=empty)(
            model_ready
        )
        router.route(
            "GET",
            base,
            summary="Model metadata: platform, versions, inputs and outputs.",
            tag=TAG,
            responses={200: ModelMetadata, 404: ErrorReply, 503: ErrorReply},
        )(model_meta)
        router.route(
            "POST",
            base + "/infer",
            summary="Inference (JSON, or binary tensor data after the JSON header).",
            tag=TAG,
            request=InferenceRequest,
            responses={
                200: InferenceResponse,
                400: ErrorReply,
                404: ErrorReply,
                411: ErrorReply,
                413: ErrorReply,
                503: ErrorReply,
            },
        )(infer)
    return router


def _version(req: Request) -> int | None:
    raw = req.params.get("version")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"expected an integer model version, got {raw!r}")
    return int(raw)


class _Tensor(msgspec.Struct, frozen=True):
    spec: RequestInput
    raw: bytes | None


def _decode(req: Request) -> tuple[InferenceRequest, dict[str, _Tensor]]:
    header = req.headers.get(b"inference-header-content-length")
    head, tail = req.body, b""
    if header is not None:
        if not header.isdigit() or int(header) > len(req.body):
            raise BadRequest(
                f"expected Inference-Header-Content-Length of at most {len(req.body)} (the "
                f"body's length), got {header.decode('latin-1')!r}"
            )
        head, tail = req.body[: int(header)], req.body[int(header) :]
    try:
        inference = _DECODER.decode(head)
    except msgspec.DecodeError as exc:
        raise BadRequest(
            'expected an inference request {"id"?: str, "inputs": [{"name", "shape", '
            f'"datatype", "data"}}, ...], "outputs"?: [{{"name"}}, ...]}}; got: {exc}'
        ) from None
    tensors: dict[str, _Tensor] = {}
    offset = 0
    for spec in inference.inputs:
        if spec.name in tensors:
            raise BadRequest(f"expected each input once, got {spec.name!r} twice")
        size = spec.parameters.get("binary_data_size")
        raw = None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BadRequest(
                    f"expected input {spec.name!r} binary_data_size as a count of bytes, "
                    f"got {size!r}"
                )
            raw = tail[offset : offset + size]
            offset += size
            if len(raw) != size:
                raise BadRequest(
                    f"expected {size} bytes of binary data for input {spec.name!r}, got {len(raw)}"
                )
        elif spec.data is None:
            raise BadRequest(f"expected data or binary_data_size for input {spec.name!r}")
        tensors[spec.name] = _Tensor(spec, raw)
    if offset != len(tail):
        raise BadRequest(
            f"expected {offset} bytes of binary tensor data after the JSON header, got {len(tail)}"
        )
    return inference, tensors


def _only(tensors: dict[str, _Tensor], names: Sequence[str]) -> None:
    extra = sorted(set(tensors) - set(names))
    if extra:
        raise BadRequest(f"expected inputs {list(names)}, got also {extra}")


def _input(tensors: dict[str, _Tensor], name: str) -> _Tensor:
    tensor = tensors.get(name)
    if tensor is None:
        raise BadRequest(f"expected an input named {name!r}, got none")
    return tensor


def _count(spec: RequestInput) -> int:
    return math.prod(spec.shape)


def _check_type(spec: RequestInput, datatype: str) -> None:
    if spec.datatype != datatype:
        raise BadRequest(
            f"expected input {spec.name!r} of datatype {datatype}, got {spec.datatype!r}"
        )


def _strings(tensor: _Tensor) -> list[str]:
    spec = tensor.spec
    _check_type(spec, "BYTES")
    if tensor.raw is not None:
        values = _unpack_bytes(spec.name, tensor.raw)
    else:
        values = _flatten(spec.data)
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"expected input {spec.name!r} data as strings, got {spec.data!r:.80}")
    if len(values) != _count(spec):
        raise BadRequest(
            f"expected {_count(spec)} elements in input {spec.name!r} (shape {spec.shape}), "
            f"got {len(values)}"
        )
    return values


def _unpack_bytes(name: str, raw: bytes) -> list[str]:
    out, i = [], 0
    try:
        while i < len(raw):
            (n,) = _U32.unpack_from(raw, i)
            i += 4
            if i + n > len(raw):
                raise BadRequest(f"expected {n} bytes for an element of input {name!r}, got fewer")
            out.append(raw[i : i + n].decode("utf-8"))
            i += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"expected input {name!r} as 4-byte-length-prefixed UTF-8 strings, got: {exc}"
        ) from None
    return out


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _fp32(tensor: _Tensor) -> np.ndarray:
    spec = tensor.spec
    _check_type(spec, "FP32")
    if tensor.raw is not None:
        if len(tensor.raw) % 4:
            raise BadRequest(
                f"expected input {spec.name!r} as 4-byte floats, got {len(tensor.raw)} bytes"
            )
        arr = np.frombuffer(tensor.raw, dtype="<f4")
    else:
        try:
            arr = np.asarray(spec.data, dtype=np.float32).ravel()
        except (TypeError, ValueError):
            raise BadRequest(
                f"expected input {spec.name!r} data as numbers (flat or nested row-major), "
                "got a ragged or non-numeric list"
            ) from None
    if arr.size != _count(spec):
        raise BadRequest(
            f"expected {_count(spec)} elements in input {spec.name!r} (shape {spec.shape}), "
            f"got {arr.size}"
        )
    return arr.reshape(spec.shape)


def _one(tensors: dict[str, _Tensor], name: str) -> str:
    tensor = _input(tensors, name)
    values = _strings(tensor)
    if tensor.spec.shape != [1]:
        raise BadRequest(f"expected input {name!r} of shape [1], got {tensor.spec.shape}")
    return values[0]


def _ctr_request(
    request_id: str, tensors: dict[str, _Tensor], surfaces: Collection[str]
) -> PredictionRequest:
    _only(tensors, _CTR_INPUTS)
    user_id, surface = _one(tensors, "user_id"), _one(tensors, "surface")
    candidates = _input(tensors, "candidates")
    if len(candidates.spec.shape) != 1:
        raise BadRequest(f"expected input 'candidates' of shape [N], got {candidates.spec.shape}")
    fields = {
        "request_id": request_id,
        "user_id": user_id,
        "surface": surface,
        "candidates": _strings(candidates),
    }
    try:  # the checks of a /v1 body: types, the surface's values, at least one candidate
        return validate_request(msgspec.convert(fields, PredictionRequest), surfaces)
    except (msgspec.ValidationError, ContractError) as exc:
        raise BadRequest(f"expected a valid prediction request, got: {exc}") from None


def _answer(
    inference: InferenceRequest,
    model: str,
    version: int,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
) -> Response:
    wanted = inference.outputs or [RequestOutput(name=n) for n in outputs]
    binary_default = inference.parameters.get("binary_data_output") is True
    answered: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for out in wanted:
        if out.name not in outputs:
            raise BadRequest(f"expected outputs among {list(outputs)}, got {out.name!r}")
        unsupported = [p for p in _UNSUPPORTED_OUTPUT_PARAMS if p in out.parameters]
        if unsupported:
            raise BadRequest(f"expected no {unsupported} on output {out.name!r}: not supported")
        arr = outputs[out.name].astype("<f4", copy=False)
        shape = list(arr.shape)
        if out.parameters.get("binary_data", binary_default) is True:
            blob = arr.tobytes()
            blobs.append(blob)
            params: Parameters = {"binary_data_size": len(blob)}
            answered.append(
                ResponseOutput(name=out.name, shape=shape, datatype="FP32", parameters=params)
            )
        else:
            data = arr.ravel().tolist()
            answered.append(ResponseOutput(name=out.name, shape=shape, datatype="FP32", data=data))
    head = _ENCODER.encode(
        InferenceResponse(
            model_name=model, model_version=str(version), id=request_id, outputs=answered
        )
    )
    if not blobs:
        return Response(200, head)
    return Response(
        200,
        head + b"".join(blobs),
        "application/octet-stream",
        headers=(("Inference-Header-Content-Length", str(len(head))),),
    )
