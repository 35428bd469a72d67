"""What a shadow costs a request: ``PredictionService.predict`` with and without a candidate
scored beside production (20 candidates per request, in process).

The same service answers the same requests in interleaved rounds: the baseline with no
shadow, then with a shadow of the same feature spec (the featurised rows are shared:
one more onnxruntime run), then with a shadow of another spec (featurised twice). Both
models are FTRL over the feed spec (2^18 coordinates) trained on a few thousand rows;
features come from an in-memory table (the replica's cost is not what is measured).
Prints p50/p99 per arm and the ratios against the baseline measured in the same run.

Usage: ``python bench/bench_shadow.py [--requests 3000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from streamlearn.models.features import FeatureSpec
from streamlearn.models.registry import FileRegistry, Stage
from streamlearn.project import load_project
from streamlearn.serving.service import PredictionService
from streamlearn.streams.contracts import PredictionRequest, Scalar

#: The built-in example project's parts.
CATALOG = load_project().catalog

N_USERS, N_ITEMS, CANDIDATES = 500, 2000, 20

#: The built-in example's feed model.
FEED = load_project().model_catalog.get("feed")


class Table:
    """Features of every user and item, in memory."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.users = {
            f"u{i}": {"user_impressions": int(rng.integers(0, 500))} for i in range(N_USERS)
        }
        self.stored = {
            f"i{i}": {"item_impressions": int(rng.integers(0, 5000)), "item_category": f"c{i % 9}"}
            for i in range(N_ITEMS)
        }

    def user(self, user_id: str) -> Mapping[str, Scalar] | None:
        return self.users.get(user_id)

    def item(self, item_id: str) -> Mapping[str, Scalar] | None:
        return self.stored.get(item_id)

    def items(self, item_ids: Sequence[str]) -> list[Mapping[str, Scalar] | None]:
        return [self.stored.get(i) for i in item_ids]


def _publish(registry: FileRegistry, spec: FeatureSpec, seed: int, stage: Stage | None) -> int:
    learner = FEED.with_spec(spec).create(seed=seed)
    rng = np.random.default_rng(seed)
    rows = [
        {"user_id": f"u{rng.integers(N_USERS)}", "item_id": f"i{rng.integers(N_ITEMS)}",
         "surface": "feed", "item_category": f"c{rng.integers(9)}"}
        for _ in range(5000)
    ]  # fmt: skip
    learner.learn_many(rows, (rng.random(len(rows)) < 0.1).astype(float))
    return registry.publish("feed", learner.snapshot(), stage=stage).version


def _time(service: PredictionService, requests: list[PredictionRequest]) -> np.ndarray:
    out = np.empty(len(requests))
    for k, req in enumerate(requests):
        t0 = time.perf_counter()
        service.predict("feed", req)
        out[k] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    requests = [
        PredictionRequest(
            f"r{k}", f"u{rng.integers(N_USERS)}", "feed",
            [f"i{j}" for j in rng.choice(N_ITEMS, CANDIDATES, replace=False)],
        )
        for k in range(args.requests)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        registry = FileRegistry(Path(tmp))
        production = _publish(registry, FEED.spec, 1, None)
        same = _publish(registry, FEED.spec, 2, Stage.CANDIDATE)
        other_spec = FeatureSpec(
            categorical=FEED.spec.categorical, numeric=FEED.spec.numeric, hash_bits=16
        )
        other = _publish(registry, other_spec, 3, Stage.CANDIDATE)
        service = PredictionService(registry, Table(rng), ["feed"], CATALOG)
        service.load(registry.get("feed", production))
        shadows = {
            "no shadow (baseline)": None,
            "shadow, same spec": registry.get("feed", same),
            "shadow, another spec": registry.get("feed", other),
        }
        lat: dict[str, list[np.ndarray]] = {name: [] for name in shadows}
        _time(service, requests[:300])  # warm up
        for _ in range(args.rounds):
            for name, mv in shadows.items():
                service.load_shadow("feed", mv)
                lat[name].append(_time(service, requests))
    base = np.concatenate(lat["no shadow (baseline)"])
    b50, b99 = np.percentile(base, 50), np.percentile(base, 99)
    print(f"{'arm':<24} {'p50 ms':>8} {'p99 ms':>8} {'p50 ×':>6} {'p99 ×':>6}")
    for name, parts in lat.items():
        x = np.concatenate(parts)
        p50, p99 = np.percentile(x, 50), np.percentile(x, 99)
        print(f"{name:<24} {p50 * 1e3:8.3f} {p99 * 1e3:8.3f} {p50 / b50:6.2f} {p99 / b99:6.2f}")


if __name__ == "__main__":
    main()
