"""Step outputs as data: how a step's return value is stored in the cache and read back.

The cache may live on a file system that other people (or a Ray cluster's other nodes)
can write, so what it holds must never run code when it is read: no pickle. A value is
encoded with msgpack (msgspec) and read back as the type the step's return annotation
names, with these leaves besides msgpack's own (``None``, bools, numbers, strings,
bytes, lists, dicts):

* dataclasses and msgspec structs: by their fields (read back as the annotated class;
  under ``Any`` or without an annotation, as a dict);
* numpy arrays of numbers or bools (an msgpack extension holding the dtype, the shape
  and the raw bytes; an object dtype is refused);
* learners (``streamlearn.models.learners.base.FeaturisedLearner``): their data-only
  state (:mod:`streamlearn.models.state`, rebuilt by
  :func:`streamlearn.models.zoo.load_state`, its SHA-256 checked).

Anything else is refused when the output is stored (:class:`FlowError`), never pickled.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec
import numpy as np

from streamlearn.offline.errors import FlowError

#: msgpack extension codes
_NDARRAY: Final = 1
_LEARNER: Final = 2
_SHA_LEN: Final = 64


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise TypeError(f"expected a numeric numpy array, got dtype {obj.dtype}")
        head = json.dumps({"dtype": obj.dtype.str, "shape": list(obj.shape)}).encode()
        raw = np.ascontiguousarray(obj).tobytes()
        return msgspec.msgpack.Ext(_NDARRAY, len(head).to_bytes(4, "big") + head + raw)
    if isinstance(obj, np.generic):
        return obj.item()
    from streamlearn.models.learners.base import FeaturisedLearner
    from streamlearn.models.state import encode_arrays

    if isinstance(obj, FeaturisedLearner):
        state = encode_arrays(obj.state_header(), obj.state_arrays())
        return msgspec.msgpack.Ext(_LEARNER, state.sha256.encode() + state.data)
    raise TypeError(
        f"{type(obj).__name__} is not data (expected JSON types, bytes, numpy arrays, "
        "dataclasses or msgspec structs of them, or a learner)"
    )


def _ext_hook(code: int, data: memoryview) -> Any:
    raw = bytes(data)
    if code == _NDARRAY:
        n = int.from_bytes(raw[:4], "big")
        head = json.loads(raw[4 : 4 + n])
        dtype = np.dtype(str(head["dtype"]))
        if dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"refusing a numpy array of dtype {dtype}")
        return np.frombuffer(raw[4 + n :], dtype=dtype).reshape(head["shape"]).copy()
    if code == _LEARNER:
        from streamlearn.models.zoo import load_state

        return load_state(raw[_SHA_LEN:], raw[:_SHA_LEN].decode("ascii"))
    raise ValueError(f"unknown msgpack extension {code}")


def _dec_hook(kind: type, obj: Any) -> Any:
    if isinstance(obj, kind):
        return obj
    raise TypeError(f"expected {getattr(kind, '__name__', kind)}, got {type(obj).__name__}")


_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def return_type(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` resolved (``Any`` when absent or unresolvable)."""
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:  # an annotation naming what its module cannot resolve
        return Any


def encode_value(value: Any, where: str) -> bytes:
    """``value`` as msgpack bytes; :class:`FlowError` when it is not data (see module)."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FlowError(
            f"expected {where} to return data, got {type(value).__name__}: {exc}"
        ) from None


def decode_value(data: bytes, kind: Any = Any) -> Any:
    """Inverse of :func:`encode_value`, read as ``kind``; raises ``ValueError`` (or a
    ``msgspec``/model error) on anything that is not such an output."""
    decoder = msgspec.msgpack.Decoder(kind, dec_hook=_dec_hook, ext_hook=_ext_hook)
    return decoder.decode(data)
