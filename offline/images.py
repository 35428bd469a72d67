"""Image datasets for the vision path: an image folder, or scikit-learn's digits.

Every image becomes ``uint8 [C, H, W]`` at a fixed size: decoded with Pillow, converted
to grayscale (``L``, C=1) or colour (``RGB``, C=3), resized with bilinear filtering to
``size × size``. The serving side must prepare images exactly the same way; the
snapshot metadata spells it out (``streamlearn.offline.vision``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from PIL import Image, UnidentifiedImageError

from streamlearn.offline.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass
class ImageSet:
    """Images ``x`` (uint8 ``[N, C, H, W]``), labels ``y`` (int64), class names, identity."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def color_mode(self) -> str:
        """``L`` (grayscale) or ``RGB``."""
        return "L" if self.x.shape[1] == 1 else "RGB"


def to_array(img: Image.Image, size: int, mode: str) -> np.ndarray:
    """One image as uint8 ``[C, size, size]``: converted to ``mode``, resized bilinearly."""
    img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_digits(size: int = 16) -> ImageSet:
    """scikit-learn's 1,797 8×8 digits, scaled to 0..255 and resized to ``size``."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    pixels = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = np.stack([to_array(Image.fromarray(p, "L"), size, "L") for p in pixels])
    identity = {
        "name": "sklearn-digits",
        "checksum": "xxh3_128:" + xxhash.xxh3_128_hexdigest(pixels.tobytes()),
        "images": len(x),
    }
    return ImageSet(x, d.target.astype(np.int64), [str(c) for c in d.target_names], identity)


def load_image_folder(root: Path, size: int = 32, channels: int | None = None) -> ImageSet:
    """Images under ``root/<class>/*.{png,jpg,jpeg}``; classes are the sorted subfolders.

    ``channels`` 1 or 3; ``None`` picks 1 when every image is grayscale, else 3.
    Files that Pillow cannot read are skipped with a warning (counted in the identity).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"expected an image folder at {root}, found none")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (f, ci)
        for ci, c in enumerate(classes)
        for f in sorted((root / c).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(classes) < 2 or not files:
        raise DatasetError(
            f"expected at least two class subfolders with PNG/JPEG images in {root}, "
            f"got classes {classes} and {len(files)} images"
        )
    readable: list[tuple[Path, int]] = []
    modes: set[str] = set()
    for f, ci in files:  # pass 1: headers only, to pick the channel count
        try:
            with Image.open(f) as img:
                modes.add(img.mode)
        except (OSError, UnidentifiedImageError) as exc:
            log.warning("skipping unreadable image %s: %s", f, exc)
            continue
        readable.append((f, ci))
    if not readable:
        raise DatasetError(f"no readable image under {root}")
    if channels is None:
        channels = 1 if modes <= _GRAY_MODES else 3
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    h = xxhash.xxh3_128()
    for f, ci in readable:  # pass 2: decode, convert, resize; one image in memory at a time
        try:
            with Image.open(f) as img:
                arrays.append(to_array(img, size, mode))
        except (OSError, UnidentifiedImageError) as exc:
            log.warning("skipping unreadable image %s: %s", f, exc)
            continue
        labels.append(ci)
        h.update(f"{f.relative_to(root)}\0".encode())
        h.update(f.read_bytes())
    if not arrays:
        raise DatasetError(f"no readable image under {root}")
    x = np.stack(arrays)
    y = np.array(labels, dtype=np.int64)
    skipped = len(files) - len(arrays)
    identity = {
        "name": "image-folder",
        "path": str(root.resolve()),
        "images": len(arrays),
        "skipped": skipped,
        "checksum": "xxh3_128:" + h.hexdigest(),
    }
    return ImageSet(x, y, classes, identity)


def stratified_split(y: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, holdout indices): ``holdout`` of each class, drawn with ``seed``."""
    if not 0.0 < holdout < 1.0:
        raise DatasetError(f"holdout must be in (0, 1), got {holdout}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, round(len(idx) * holdout)) if len(idx) > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
