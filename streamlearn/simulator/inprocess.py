"""The simulated app with an in-process ranker: the log's shape and what a learner gets.

:func:`run_inprocess` drives :class:`~streamlearn.simulator.traffic.Traffic` in virtual time (no
broker, no HTTP, no wall clock), ranks every request with one learner per surface that
learns from what it ranked in batches (predict first, then learn: progressive
evaluation), and measures the published log's shape (:mod:`streamlearn.simulator.shape`). It is how
the simulator's realism and learnability are checked (``tests/unit/simulator``,
``bench/bench_simulator.py``); the live loop runs the same traffic against serving.

Features are the ids and categories requests carry (``user_id``, ``item_id``,
``surface``, ``item_category`` and the ``user_id × item_category`` cross), not the
feature store's counts; labels are exact (no label window).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import create
from streamlearn.simulator.example import example
from streamlearn.simulator.sessions import SessionParams
from streamlearn.simulator.shape import ShapeTally
from streamlearn.simulator.surfaces import default_surfaces
from streamlearn.simulator.traffic import Traffic
from streamlearn.simulator.world import World

#: What makes a shown item a positive, per surface: the head of the model that ranks it.
POSITIVES: Final = {d.surfaces[0]: d.head.positives for d in example().model_catalog if d.surfaces}
SPEC: Final = FeatureSpec(
    categorical=("user_id", "item_id", "surface", "item_category"),
    crosses=(("user_id", "item_category"),),
    hash_bits=18,
)


@dataclass
class InProcessRun:
    """The log's shape, and per surface: examples, progressive AUC over the second half of
    the examples, and CTR per shown item of the learner's ranking, random ranking and
    the oracle over the second half of the time (expected, from the truth)."""

    shape: dict[str, Any]
    examples: dict[str, int] = field(default_factory=dict)
    auc: dict[str, float | None] = field(default_factory=dict)
    ctr: dict[str, dict[str, float | None]] = field(default_factory=dict)


def run_inprocess(
    world: World,
    seconds: float = 120.0,
    rate: float = 150.0,
    ads_fraction: float = 0.3,
    sessions: SessionParams | None = None,
    learner: str = "ftrl",
    params: dict[str, Any] | None = None,
    batch_size: int = 256,
) -> InProcessRun:
    """Run ``seconds`` of virtual traffic ranked by ``learner`` (one per surface)."""
    traffic = Traffic(world, default_surfaces(world), rate, "inprocess", ads_fraction, sessions)
    fz = Featuriser(SPEC)
    learners = {s: create(learner, SPEC, seed=world.seed, **(params or {})) for s in POSITIVES}
    pending: dict[str, tuple[list[dict[str, Any]], list[int]]] = {s: ([], []) for s in POSITIVES}
    ys: dict[str, list[np.ndarray]] = {s: [] for s in POSITIVES}
    ps: dict[str, list[np.ndarray]] = {s: [] for s in POSITIVES}
    ctr = {s: np.zeros(4) for s in POSITIVES}
    tally = ShapeTally()
    while (planned := traffic.plan()).t <= seconds:
        surface = planned.surface.name
        rows = planned.rows()
        scores = learners[surface].predict_featurised(*fz.transform_many(rows))
        outcome = traffic.show(planned, scores.tolist())
        tally.request(planned.request.user_id, planned.t)
        engaged = {s.item_id for _, t, s in outcome.engagements if t in POSITIVES[surface]}
        for _, type_, shown in outcome.engagements:
            tally.event(shown.user_id, type_, surface, shown.item_id)
        xs, labels = pending[surface]
        by_id = {r["item_id"]: r for r in rows}
        for shown in outcome.shown:
            tally.event(shown.user_id, "impression", surface, shown.item_id)
            xs.append(by_id[shown.item_id])
            labels.append(int(shown.item_id in engaged))
        if len(xs) >= batch_size:
            idx, val = fz.transform_many(xs)
            y = np.asarray(labels, dtype=np.int64)
            ps[surface].append(learners[surface].predict_featurised(idx, val))
            ys[surface].append(y)
            learners[surface].learn_featurised(idx, val, y)
            pending[surface] = ([], [])
        if planned.t > seconds / 2:
            e, k = outcome.expected, len(outcome.shown)
            ctr[surface] += (k, e.model * k, e.random * k, e.oracle * k)
    run = InProcessRun(tally.snapshot())
    for s in POSITIVES:
        if not ys[s]:
            continue
        y, p = np.concatenate(ys[s]), np.concatenate(ps[s])
        run.examples[s] = int(y.size)
        run.auc[s] = exact_auc(y[y.size // 2 :], p[p.size // 2 :])
        c = ctr[s]
        run.ctr[s] = {
            policy: (float(c[i] / c[0]) if c[0] else None)
            for i, policy in ((1, "model"), (2, "random"), (3, "oracle"))
        }
    return run
