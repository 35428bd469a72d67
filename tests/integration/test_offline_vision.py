"""The vision path end to end on CPU: digits → CNN → registry → onnxruntime.

Training here is pinned to ``device="cpu"`` where the test compares runs bit for bit
(CPU training is bit-reproducible; CUDA training is compared within a tolerance by
``bench/device_check.py``, which a GPU machine runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from streamlearn.models.registry import FileRegistry
from streamlearn.offline.errors import OfflineError
from streamlearn.offline.images import load_image_folder
from streamlearn.offline.vision import VisionConfig, VisionProgress, train_vision


def _serve_like(meta: dict, images_0_255: np.ndarray) -> np.ndarray:
    """Prepare images exactly as the metadata says (what serving does)."""
    mean = np.array(meta["mean"], np.float32)[None, :, None, None]
    std = np.array(meta["std"], np.float32)[None, :, None, None]
    return (
        (images_0_255.astype(np.float32) / np.float32(meta["pixel_scale"]) - mean) / std
    ).astype(np.float32)


def test_digits_train_publish_and_onnx_serves(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "registry")
    result = train_vision(VisionConfig(dataset="digits"), tmp_path / "ckpt", reg, "digits")
    assert result.accuracy >= 0.97, result.summary()
    assert result.parity_max_abs_diff <= 1e-5
    mv = reg.serving_version("digits")
    assert mv is not None and mv.version == result.version.version  # type: ignore[union-attr]
    meta = mv.metadata
    assert (meta["kind"], meta["inputs"], meta["output"]) == ("vision", ["image"], "probs")
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_shape"] == [1, 16, 16]
    assert meta["metrics"]["accuracy"] == result.accuracy and meta["lineage"]["code"]["package"]

    # Serve from the registry file with only the metadata: raw 8x8 digits → 16x16 → probs.
    d = load_digits()
    raw = np.stack(
        [
            np.asarray(
                Image.fromarray(np.rint(img * 255 / 16).astype(np.uint8), "L").resize(
                    (16, 16), Image.Resampling.BILINEAR
                )
            )[None]
            for img in d.images[:200]
        ]
    )
    sess = ort.InferenceSession(str(mv.onnx_path), providers=["CPUExecutionProvider"])
    probs = sess.run(["probs"], {"image": _serve_like(meta, raw)})[0]
    assert probs.shape == (200, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == d.target[:200]).mean() >= 0.95


def test_rerun_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = VisionConfig(dataset="digits", epochs=3, size=8, device="cpu")

    def crash_in_epoch_3(p: VisionProgress) -> None:
        if p.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vision(cfg, tmp_path / "ckpt", progress=crash_in_epoch_3)
    resumed = train_vision(cfg, tmp_path / "ckpt")
    assert (resumed.resumed_from, resumed.epochs_run) == (2, 1)
    again = train_vision(cfg, tmp_path / "ckpt")
    assert (again.resumed_from, again.epochs_run) == (3, 0)
    fresh = train_vision(cfg, tmp_path / "other")
    x = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)

    def run(onnx: bytes) -> np.ndarray:
        return ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).run(
            None, {"image": x}
        )[0]

    assert resumed.device == fresh.device == "cpu"
    assert np.array_equal(run(resumed.onnx), run(fresh.onnx))


class _Exploit:
    """Unpickling this creates ``path`` (what a planted pickle could do with any code)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.path), "w"))


def test_a_checkpoint_that_is_not_weights_only_is_refused(tmp_path: Path) -> None:
    import torch

    cfg = VisionConfig(dataset="digits", epochs=1, size=8, device="cpu")
    train_vision(cfg, tmp_path / "ckpt")
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    marker = tmp_path / "pwned"
    # a later epoch's checkpoint, as someone who can write the directory would plant it
    torch.save({"epoch": 9, "model": _Exploit(marker), "optim": {}}, run_dir / "epoch-0009.pt")
    with pytest.raises(OfflineError, match=r"refusing the checkpoint .*epoch-0009\.pt"):
        train_vision(cfg, tmp_path / "ckpt")
    assert not marker.exists()


def test_image_folder_any_size_and_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, axis in (("horizontal", 0), ("vertical", 1)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(24):
            side = int(rng.integers(20, 48))
            a = np.zeros((side, side), np.uint8)
            stripe = slice(side // 3, 2 * side // 3)
            if axis == 0:
                a[stripe, :] = 255
            else:
                a[:, stripe] = 255
            img = Image.fromarray(a, "L")
            if i % 2:
                img.convert("RGB").save(tmp_path / "imgs" / cls / f"{i}.jpg")
            else:
                img.save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "vertical" / "broken.png").write_bytes(b"not a png")
    ds = load_image_folder(tmp_path / "imgs", size=16)
    assert ds.x.shape == (48, 3, 16, 16) and ds.identity["skipped"] == 1  # JPEGs are RGB
    assert load_image_folder(tmp_path / "imgs", size=8, channels=1).x.shape == (48, 1, 8, 8)
    reg = FileRegistry(tmp_path / "registry")
    cfg = VisionConfig(data=tmp_path / "imgs", size=16, epochs=4, batch_size=8)
    result = train_vision(cfg, tmp_path / "ckpt", reg, "bars")
    assert result.classes == ["horizontal", "vertical"] and result.accuracy >= 0.8
    assert reg.get("bars", 1).metadata["color_mode"] == "RGB"
