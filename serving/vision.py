"""Images in prediction requests → float32 ``[C, H, W]`` arrays with values in ``[0, 1]``.

A request carries either ``"image"``, a nested JSON list (``H×W`` for one-channel models,
else ``C×H×W``) of pixel values, or ``"image_png_base64"``, a base64 PNG. List values
are read as 0–255 when any of them exceeds 1, else as already scaled to 0–1; a PNG is
always 0–255 and is converted to the model's channel count and resized to its ``H×W``.
The model's own ``mean``/``std`` normalisation is applied afterwards by the session.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from streamlearn.models.extras import require
from streamlearn.serving.errors import BadRequest

_MAX_PIXEL = 255.0


def image_array(payload: Mapping[str, Any], shape: tuple[int, int, int]) -> np.ndarray:
    """The request's image as float32 ``shape`` (``C, H, W``) scaled to ``[0, 1]``."""
    if "image" in payload:
        return _from_list(payload["image"], shape)
    if "image_png_base64" in payload:
        return _from_png(payload["image_png_base64"], shape)
    raise BadRequest(
        'expected a vision request {"request_id": str, "image": [[...]] or '
        f'"image_png_base64": str}}, got keys {sorted(payload)}'
    )


def _from_list(image: Any, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    want = f"{h}×{w}" if c == 1 else f"{c}×{h}×{w}"
    try:
        arr = np.asarray(image, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest(
            f"expected image as a {want} nested list of numbers, got a ragged or non-numeric list"
        ) from None
    if c == 1 and arr.shape == (h, w):
        arr = arr[None, :, :]
    if arr.shape != (c, h, w):
        raise BadRequest(f"expected image of shape {want}, got {'×'.join(map(str, arr.shape))}")
    return check_pixels(arr)


def check_pixels(arr: np.ndarray) -> np.ndarray:
    """One image's pixels scaled to ``[0, 1]``: read as 0–255 when any value exceeds 1."""
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > _MAX_PIXEL:
        raise BadRequest("expected pixel values in [0, 1] or [0, 255], got values outside")
    return arr / _MAX_PIXEL if arr.max() > 1.0 else arr


def _from_png(data: Any, shape: tuple[int, int, int]) -> np.ndarray:
    require("vision", "a PNG image payload")
    from PIL import Image, UnidentifiedImageError  # only vision requests pay for Pillow

    c, h, w = shape
    if not isinstance(data, str):
        raise BadRequest(f"expected image_png_base64 as a string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
        img: Image.Image = Image.open(io.BytesIO(raw)).convert("L" if c == 1 else "RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(
            f"expected a base64-encoded PNG image, got undecodable data: {exc}"
        ) from None
    if img.size != (w, h):
        img = img.resize((w, h))
    arr = np.asarray(img, dtype=np.float32) / _MAX_PIXEL
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[0] != c:
        raise BadRequest(f"expected a model with 1 or 3 channels, this one has {c}")
    return arr
