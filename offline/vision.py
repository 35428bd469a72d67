"""The vision path: a small CNN (torch) trained in batch, exported to ONNX, published.

What a published vision model expects (also written into its metadata):

* input ``image``: float32 ``[N, C, H, W]`` (``input_shape`` = ``[C, H, W]``), each image
  prepared as ``streamlearn.offline.images.to_array`` does — converted to ``color_mode`` (``L`` or
  ``RGB``), resized bilinearly to ``H × W`` — then normalised per channel as
  ``(pixel / pixel_scale - mean[c]) / std[c]`` with ``pixel_scale = 255``;
* output ``probs``: float32 ``[N, len(classes)]``, softmax probabilities in the order of
  ``classes``.

Training is reproducible for a given seed (initialisation under
``torch.random.fork_rng``, so the global RNG is untouched; batch order from
``numpy.random.default_rng((seed, epoch))``; Adam with a cosine learning-rate decay that
is a function of the step number, so a checkpoint needs only the weights and Adam's
state). On CPU two runs, or a run and its resumption, give bit-equal weights. On CUDA
training runs with cuDNN's deterministic algorithms and
``torch.use_deterministic_algorithms(True, warn_only=True)`` (``CUBLAS_WORKSPACE_CONFIG``
is set to ``:4096:8`` when unset), which removes the usual sources of run-to-run
differences but is not promised bit-equal by torch for every kernel: compare CUDA runs
within a tolerance (``bench/device_check.py`` measures it).

A checkpoint (weights, Adam's state, the epoch) is written after every epoch under
``checkpoint_dir/<run key>/``; a rerun with the same data and config resumes from the
last one (and, with every epoch done, goes straight to evaluation and export).
Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values
only, so a checkpoint someone else wrote cannot run code here; one that holds anything
else is refused with an :class:`OfflineError`.
Uses CUDA when available unless ``device="cpu"``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import xxhash
from torch import nn

from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.stages import publish_candidate
from streamlearn.models.state import encode_arrays
from streamlearn.offline.errors import OfflineError
from streamlearn.offline.images import ImageSet, load_digits, load_image_folder, stratified_split
from streamlearn.offline.lineage import code_version

log = logging.getLogger(__name__)

PIXEL_SCALE = 255.0
PARITY_TOLERANCE = 1e-5
OPSET = 17
LEARNER = "small-cnn"


@dataclass(frozen=True)
class VisionConfig:
    """What to train on and how. ``size`` defaults to 16 for digits, 32 for folders."""

    data: Path | None = None
    dataset: str | None = None
    size: int | None = None
    channels: int | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 6e-3
    holdout: float = 0.2
    seed: int = 0
    device: str = "auto"
    threads: int = 1

    def image_size(self) -> int:
        """The square input size; a multiple of 4 (two 2× poolings)."""
        size = self.size or (16 if self.dataset == "digits" else 32)
        if size < 4 or size % 4:
            raise OfflineError(f"image size must be a multiple of 4 (>= 4), got {size}")
        return size


class SmallCNN(nn.Module):
    """conv16-pool-conv32-pool-fc64-fc(classes); returns logits."""

    def __init__(self, channels: int, size: int, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, classes]``."""
        return self.head(self.features(x))


class _WithSoftmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


@dataclass(frozen=True)
class VisionProgress:
    """Reported after every batch."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float


@dataclass(frozen=True)
class VisionResult:
    """What a vision training produced."""

    accuracy: float
    classes: list[str]
    train_seconds: float
    version: ModelVersion | None
    epochs_run: int
    resumed_from: int
    parity_max_abs_diff: float
    device: str
    onnx: bytes

    def summary(self) -> dict[str, Any]:
        """The ``--summary-json`` content."""
        return {
            "accuracy": self.accuracy,
            "classes": self.classes,
            "train_seconds": self.train_seconds,
            "version": None if self.version is None else self.version.version,
            "model": None if self.version is None else self.version.model,
            "epochs_run": self.epochs_run,
            "resumed_from_epoch": self.resumed_from,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "device": self.device,
        }


def load_images(config: VisionConfig) -> ImageSet:
    """The configured image set (folder or digits)."""
    if (config.data is None) == (config.dataset is None):
        raise OfflineError("expected exactly one of an image folder (--data) or --dataset digits")
    if config.dataset is not None:
        if config.dataset != "digits":
            raise OfflineError(f"dataset must be 'digits', got {config.dataset!r}")
        return load_digits(config.image_size())
    assert config.data is not None
    return load_image_folder(config.data, config.image_size(), config.channels)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OfflineError("device cuda requested, but torch sees no CUDA device")
    return torch.device(name)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32) / np.float32(PIXEL_SCALE)
    return (out - mean[None, :, None, None]) / std[None, :, None, None]


def _run_key(config: VisionConfig, images: ImageSet) -> str:
    cfg = {k: v for k, v in asdict(config).items() if k not in ("data", "device", "threads")}
    blob = json.dumps([cfg, images.identity.get("checksum"), images.classes], sort_keys=True)
    return xxhash.xxh3_64_hexdigest(blob.encode())


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _last_checkpoint(directory: Path) -> dict[str, Any] | None:
    found = sorted(directory.glob("epoch-*.pt"))
    if not found:
        return None
    try:
        state: dict[str, Any] = torch.load(found[-1], map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise OfflineError(
            f"refusing the checkpoint {found[-1]}: expected tensors and plain values only "
            f"(read with weights_only=True; anything else could run code), got: "
            f"{str(exc).splitlines()[0]}; remove it (or choose another checkpoint directory) "
            "to train from scratch"
        ) from None
    if not isinstance(state, dict) or not {"epoch", "model", "optim"} <= state.keys():
        raise OfflineError(
            f"refusing the checkpoint {found[-1]}: expected a dict with epoch, model and "
            f"optim, got {type(state).__name__}"
        )
    return state


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """On CUDA: cuDNN's deterministic algorithms and torch's deterministic mode (warn only)
    for the duration of training; restored after. On CPU training is deterministic as is."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def export_onnx(net: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """ONNX graph ``image`` float32 ``[N, C, H, W]`` → ``probs`` float32 ``[N, K]``."""
    model = _WithSoftmax(net).to("cpu").eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that it is legacy
        torch.onnx.export(
            model,
            (torch.zeros(1, *input_shape),),
            buf,  # type: ignore[arg-type]  # a file-like object works (and is documented)
            input_names=["image"],
            output_names=["probs"],
            dynamic_axes={"image": {0: "N"}, "probs": {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def onnx_parity(onnx_bytes: bytes, net: nn.Module, x: np.ndarray) -> float:
    """Max |onnxruntime − torch| over ``x``; :class:`OfflineError` above 1e-5 or when ``x``
    holds no image."""
    if not len(x):
        raise OfflineError("ONNX parity: expected images to check the graph on, got none")
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"image": x})[0]
    with torch.no_grad():
        want = _WithSoftmax(net).to("cpu").eval()(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(got - want)))
    if diff > PARITY_TOLERANCE:
        raise OfflineError(
            f"ONNX parity: expected max |diff| <= {PARITY_TOLERANCE}, got {diff:.3g}"
        )
    return diff


def _predict(net: nn.Module, x: np.ndarray, device: torch.device, batch: int = 512) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(
                torch.softmax(net(torch.from_numpy(x[i : i + batch]).to(device)), 1).cpu().numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (a small CNN on a shared CPU is fastest with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_vision(
    config: VisionConfig,
    checkpoint_dir: Path,
    registry: FileRegistry | None = None,
    model: str = "vision",
    progress: Callable[[VisionProgress], None] | None = None,
) -> VisionResult:
    """Train (or resume), evaluate on the holdout, export with a parity check, publish."""
    with _torch_threads(config.threads), _deterministic(_device(config.device)):
        return _train_vision(config, checkpoint_dir, registry, model, progress)


def _train_vision(
    config: VisionConfig,
    checkpoint_dir: Path,
    registry: FileRegistry | None,
    model: str,
    progress: Callable[[VisionProgress], None] | None,
) -> VisionResult:
    images = load_images(config)
    c, size = images.x.shape[1], images.x.shape[2]
    tr, te = stratified_split(images.y, config.holdout, config.seed)
    mean = (images.x[tr].astype(np.float64) / PIXEL_SCALE).mean(axis=(0, 2, 3)).astype(np.float32)
    std = (images.x[tr].astype(np.float64) / PIXEL_SCALE).std(axis=(0, 2, 3)).astype(np.float32)
    std = np.maximum(std, np.float32(1e-3))
    x_tr, x_te = _normalise(images.x[tr], mean, std), _normalise(images.x[te], mean, std)
    y_tr, y_te = images.y[tr], images.y[te]
    device = _device(config.device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = SmallCNN(c, size, len(images.classes))
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    run_dir = Path(checkpoint_dir) / _run_key(config, images)
    run_dir.mkdir(parents=True, exist_ok=True)
    start_epoch, train_seconds = 0, 0.0
    ckpt = _last_checkpoint(run_dir)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start_epoch, train_seconds = int(ckpt["epoch"]), float(ckpt["train_seconds"])
        log.info("resuming from %s after epoch %d", run_dir, start_epoch)

    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    batches = max(1, -(-len(xt) // config.batch_size))
    for epoch in range(start_epoch, config.epochs):
        began = time.monotonic()
        net.train()
        order = np.random.default_rng((config.seed, epoch)).permutation(len(xt))
        for b in range(batches):
            for group in opt.param_groups:  # cosine decay, a pure function of the step
                step = (epoch * batches + b) / (config.epochs * batches)
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step))
            sel = torch.from_numpy(order[b * config.batch_size : (b + 1) * config.batch_size])
            xb, yb = xt[sel].to(device), yt[sel].to(device)
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(VisionProgress(epoch + 1, config.epochs, b + 1, batches, loss.item()))
        train_seconds += time.monotonic() - began
        _save_checkpoint(
            run_dir / f"epoch-{epoch + 1:04d}.pt",
            {
                "epoch": epoch + 1,
                "model": net.state_dict(),
                "optim": opt.state_dict(),
                "train_seconds": train_seconds,
            },
        )
        for old in sorted(run_dir.glob("epoch-*.pt"))[:-2]:
            old.unlink()

    probs = _predict(net, x_te, device)
    accuracy = float((probs.argmax(1) == y_te).mean()) if len(y_te) else 0.0
    net.to("cpu")
    onnx_bytes = export_onnx(net, (c, size, size))
    diff = onnx_parity(onnx_bytes, net, (x_te if len(x_te) else x_tr)[:256])
    log.info(
        "vision holdout accuracy=%.4f on %d images; ONNX parity %.2g", accuracy, len(y_te), diff
    )

    version = None
    if registry is not None:
        version = publish_candidate(
            registry,
            model,
            _snapshot(net, config, images, mean, std, onnx_bytes),
            {
                "metrics": {
                    "accuracy": accuracy,
                    "holdout": len(y_te),
                    "train_seconds": train_seconds,
                },
                "lineage": {
                    "dataset": images.identity,
                    "code": code_version(),
                    "train": {**asdict(config), "data": str(config.data) if config.data else None},
                    "trainer": "streamlearn.offline.vision",
                },
            },
        )
    return VisionResult(
        accuracy,
        images.classes,
        train_seconds,
        version,
        config.epochs - start_epoch,
        start_epoch,
        diff,
        str(device),
        onnx_bytes,
    )


def _snapshot(
    net: nn.Module,
    config: VisionConfig,
    images: ImageSet,
    mean: np.ndarray,
    std: np.ndarray,
    onnx_bytes: bytes,
) -> Snapshot:
    c, size = images.x.shape[1], images.x.shape[2]
    state = encode_arrays(
        {"arch": {"name": LEARNER, "channels": c, "size": size, "classes": len(images.classes)}},
        {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
    )
    return Snapshot(
        onnx=onnx_bytes,
        state=state.data,
        metadata={
            "state_format": state.format,
            "state_sha256": state.sha256,
            "learner": LEARNER,
            "params": {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr},
            "seed": config.seed,
            "feature_spec": None,
            "kind": "vision",
            "inputs": ["image"],
            "output": "probs",
            "classes": images.classes,
            "input_shape": [c, size, size],
            "color_mode": images.color_mode,
            "resize": "bilinear",
            "pixel_scale": PIXEL_SCALE,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "preprocess": (
                f"convert to {images.color_mode}, resize bilinear to {size}x{size}, "
                "x = (pixel / pixel_scale - mean[c]) / std[c], float32 [N, C, H, W]"
            ),
        },
    )
