"""A model registry in the state a long run of the loop leaves, for the serving benches.

Serving must be measured where a long run takes it, not on a registry with one version:
the online trainer of each model publishes a serving-only version every second and a full
one (a resume point, with the rollout's state) every ``snapshot_s``, retention keeps the
newest 30 and the resume points, and every version has its live evaluation. This module
runs the real :class:`~streamlearn.streams.learning.trainer.OnlineTrainer` of each declared
model (no broker: records handed in, a simulated clock one second a step) over synthetic
traffic, so the registry holds exactly what the trainer writes today: metadata with the
freshness sample of every version, the rollout state of every full one,
``evaluation.json`` per version.

Usage as a script: ``python bench/aged_registry.py DIR [--seconds 300]``; the benches
import :func:`build`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamlearn.models.registry import FileRegistry
from streamlearn.project import load_project
from streamlearn.streams.contracts import PredictionRequest, TrainingExample
from streamlearn.streams.features.store import served_features
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.trainer import OnlineTrainer, TrainerConfig
from streamlearn.streams.runtime.processor import Record

N_USERS, N_ITEMS = 2000, 500
#: The built-in example project (feed and ads), whose models the benches serve.
PROJECT = load_project()
MODELS = PROJECT.model_catalog
T0 = 1_760_000_000.0


def entities(
    now: float, seed: int = 0
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Stored values of ``N_USERS`` users and ``N_ITEMS`` items as the replica holds them."""
    rng = np.random.default_rng(seed)
    users = {
        f"u{u}": {
            "user_impressions": int(rng.integers(0, 500)),
            "user_engagements": int(rng.integers(0, 40)),
            "user_hides": int(rng.integers(0, 5)),
            "user_ctr": float(rng.uniform(0.0, 0.2)),
            "user_last_event_ts": now - float(rng.exponential(60.0)),
        }
        for u in range(N_USERS)
    }
    items = {
        f"i{i}": {
            "item_impressions": int(rng.integers(0, 5000)),
            "item_engagements": int(rng.integers(0, 400)),
            "item_ctr": float(rng.uniform(0.0, 0.2)),
            "item_category": f"c{i % 12}",
            "item_last_event_ts": now - float(rng.exponential(10.0)),
        }
        for i in range(N_ITEMS)
    }
    return users, items


def traffic(
    n: int, models: list[str], candidates: int = 20, seed: int = 1
) -> list[tuple[str, PredictionRequest]]:
    """``n`` prediction requests over the entities of :func:`entities`, round-robin over
    ``models`` (each asked on its model's first surface), ids ``b0``, ``b1``, …"""
    rng = np.random.default_rng(seed)
    surfaces = {d.name: d.surfaces[0] for d in MODELS}
    out = []
    for i in range(n):
        model = models[i % len(models)]
        items = rng.choice(N_ITEMS, candidates, replace=False)
        req = PredictionRequest(
            request_id=f"b{i}",
            user_id=f"u{rng.integers(N_USERS)}",
            surface=surfaces[model],  # type: ignore[arg-type]
            candidates=[f"i{j}" for j in items],
            context={"hour": i % 24},
        )
        out.append((model, req))
    return out


def build(
    root: Path,
    seconds: int = 300,
    examples_per_s: int = 300,
    publish_s: float = 1.0,
    snapshot_s: float = 10.0,
    keep_versions: int = 30,
    seed: int = 0,
) -> FileRegistry:
    """Run every declared model's online trainer for ``seconds`` simulated seconds into a
    registry at ``root``; returns it."""
    registry = FileRegistry(root)
    topics = Topics("aged.")
    users, items = entities(T0, seed)
    row = served_features(PROJECT.catalog).row
    user_ids, item_ids = list(users), list(items)
    rng = np.random.default_rng(seed + 1)
    for definition in MODELS:
        clock = [T0]
        trainer = OnlineTrainer(
            topics,
            registry,
            TrainerConfig(
                definition=definition,
                seed=seed,
                publish_interval_s=publish_s,
                snapshot_interval_s=snapshot_s,
                keep_versions=keep_versions,
            ),
            clock=lambda c=clock: c[0],  # type: ignore[misc]
        )
        topic = topics.training_examples(definition.name)
        trainer.assign([(topic, 0)])
        offset = 0
        for _ in range(seconds):
            clock[0] += 1.0
            records = []
            for _ in range(examples_per_s):
                u = user_ids[int(rng.integers(len(user_ids)))]
                c = item_ids[int(rng.integers(len(item_ids)))]
                req = PredictionRequest(f"r{offset}", u, "feed", [c], {"hour": 9})
                label = int(rng.random() < 0.07)
                ex = TrainingExample(
                    request_id=req.request_id,
                    user_id=u,
                    item_id=c,
                    surface=definition.surfaces[0],  # type: ignore[arg-type]
                    ts=clock[0] - 8.0,
                    label=label,  # type: ignore[arg-type]
                    features=row(req, c, users[u], items[c], clock[0] - 8.0),
                    served_version=max(trainer.version, 1),
                    served_score=float(rng.uniform(0.01, 0.3)),
                    label_ts=clock[0] - 1.5 if label else None,
                )
                records.append(Record(topic, 0, offset, u.encode(), ex, timestamp=clock[0] - 0.5))
                offset += 1
            trainer.process(records)
            trainer.advance({(topic, 0): offset})
        trainer.finish()
    return registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--seconds", type=int, default=300)
    args = ap.parse_args()
    t0 = time.perf_counter()
    registry = build(args.root, args.seconds)
    for model in registry.models():
        numbers = registry.version_numbers(model)
        print(f"{model}: {len(numbers)} versions kept, newest {numbers[-1]}")
    print(f"built in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
