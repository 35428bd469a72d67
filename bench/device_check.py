"""The GPU machine's check, in one go: what streamlearn does with a CUDA device.

Not a test (CI machines have no GPU): ``python bench/device_check.py [--json out.json]``.
No GPU machine has been available to this project yet, so this script has only run on
CPU-only machines, where it reports that there is no GPU and exits 0; run it on the
first machine with a GPU and keep its output.

With a CUDA device visible to torch it checks, in order:

1. **train on cuda**: ``offline vision`` training on the bundled digits with
   ``device="cuda"`` (holdout accuracy >= 0.95, the ONNX graph exported from the
   CUDA-trained weights matches torch within 1e-5 in onnxruntime);
2. **determinism on cuda**: two fresh runs of the same config, and a run killed in its
   last epoch then resumed from its checkpoint, score the same images within
   ``--tolerance`` (1e-4; whether they are bit-equal is reported too);
3. **flow step granted a GPU**: the built-in ``vision`` flow on a local Ray, whose
   ``train`` step declares ``gpus="auto"``: the run record says one GPU was asked for
   and granted, and the step trained on ``cuda``;
4. **tests**: the tests that must hold on a GPU machine
   (``tests/unit/offline/test_flow_ray.py``, ``tests/integration/test_offline_vision.py``)
   pass there too (``--no-tests`` leaves them out).

``--cpu`` runs the same checks 1–3 on the CPU instead (a step granted no GPU, training
on ``cpu``), to try the script itself on a machine without a GPU.

Exit status: 0 when every check passed, or when there is no GPU (nothing to check; the
first line says so) unless ``--require-gpu``; 1 when a check failed; 3 with
``--require-gpu`` on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from streamlearn.models.registry import FileRegistry  # noqa: E402
from streamlearn.offline.vision import VisionConfig, VisionProgress, train_vision  # noqa: E402

NO_GPU_EXIT = 3


def _scores(onnx: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(["probs"], {"image": x})[0]
    return out


def check_train(work: Path, device: str) -> dict[str, Any]:
    reg = FileRegistry(work / "registry")
    cfg = VisionConfig(dataset="digits", epochs=10, device=device)
    result = train_vision(cfg, work / "ckpt-train", reg, "digits")
    ok = (
        result.device.startswith(device)
        and result.accuracy >= 0.95
        and result.parity_max_abs_diff <= 1e-5
    )
    return {"ok": ok, **result.summary()}


def check_determinism(work: Path, tolerance: float, device: str) -> dict[str, Any]:
    cfg = VisionConfig(dataset="digits", epochs=3, size=8, device=device)
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    first = train_vision(cfg, work / "ckpt-a")
    second = train_vision(cfg, work / "ckpt-b")

    def crash_in_last_epoch(p: VisionProgress) -> None:
        if p.epoch == cfg.epochs:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        train_vision(cfg, work / "ckpt-c", progress=crash_in_last_epoch)
    resumed = train_vision(cfg, work / "ckpt-c")
    base = _scores(first.onnx, x)
    runs = float(np.max(np.abs(_scores(second.onnx, x) - base)))
    resume = float(np.max(np.abs(_scores(resumed.onnx, x) - base)))
    return {
        "ok": runs <= tolerance and resume <= tolerance and resumed.resumed_from == 2,
        "tolerance": tolerance,
        "two_runs_max_abs_diff": runs,
        "resumed_max_abs_diff": resume,
        "bit_equal": runs == 0.0 and resume == 0.0,
        "resumed_from_epoch": resumed.resumed_from,
    }


def check_flow(work: Path, device: str) -> dict[str, Any]:
    from streamlearn.offline.flow import run_flow
    from streamlearn.offline.flow.compute import RayConfig, RayExecutor
    from streamlearn.offline.flow.vision import vision

    executor = RayExecutor(RayConfig(num_cpus=2))
    try:
        result = run_flow(
            vision,
            {"epochs": 3, "device": "auto" if device == "cuda" else device},
            root=work / "flows",
            resources={"registry": FileRegistry(work / "flow-registry")},
            executor=executor,
        )
    finally:
        executor.close()
    step = result.record["steps"]["train"]
    granted = step.get("resources") or {}
    trained_on = str(result.outputs["train"].get("device"))
    gpus = 1 if device == "cuda" else 0
    ok = (
        step.get("executor") == "ray"
        and granted.get("gpus") == gpus
        and len(granted.get("gpu_ids") or []) == gpus
        and trained_on.startswith(device)
    )
    return {"ok": ok, "resources": granted, "device": trained_on}


def check_tests() -> dict[str, Any]:
    tests = ["tests/unit/offline/test_flow_ray.py", "tests/integration/test_offline_vision.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    return {"ok": proc.returncode == 0, "tests": tests, "result": tail, "exit": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write every check's figures here")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--require-gpu", action="store_true", help="exit 3 when there is no GPU")
    ap.add_argument("--no-tests", action="store_true", help="leave out the pytest run")
    ap.add_argument("--cpu", action="store_true", help="run checks 1-3 on the CPU (a dry run)")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"

    report: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if not args.cpu and not torch.cuda.is_available():
        print(
            f"no GPU: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
            "sees no CUDA device, so the GPU checks were not run"
        )
        report["checks"] = {}
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        return NO_GPU_EXIT if args.require_gpu else 0
    if args.cpu:
        print(f"dry run on the CPU (torch {torch.__version__}): checks 1-3 with device=cpu")
    else:
        report["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        print(
            f"GPU: {', '.join(report['devices'])}; torch {torch.__version__} CUDA "
            f"{torch.version.cuda}"
        )

    checks: dict[str, Callable[[Path], dict[str, Any]]] = {
        f"train on {device}": lambda w: check_train(w, device),
        f"determinism on {device}": lambda w: check_determinism(w, args.tolerance, device),
        "flow step granted a GPU" if device == "cuda" else "flow step on the CPU": (
            lambda w: check_flow(w, device)
        ),
    }
    if not args.no_tests and not args.cpu:
        checks["tests"] = lambda w: check_tests()
    report["checks"] = {}
    with tempfile.TemporaryDirectory(prefix="device-check-") as d:
        for name, check in checks.items():
            started = time.monotonic()
            try:
                out = check(Path(d) / name.replace(" ", "-"))
            except Exception as exc:  # a check that raises has failed; report and go on
                out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out["seconds"] = round(time.monotonic() - started, 1)
            report["checks"][name] = out
            figures = {k: v for k, v in out.items() if k not in ("ok", "classes")}
            print(f"{'PASS' if out['ok'] else 'FAIL'}  {name}: {figures}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0 if all(c["ok"] for c in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
