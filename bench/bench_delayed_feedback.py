"""When the joiner emits examples, and what that does to the model: freshness, AUC and
calibration of the scores served.

The simulator's traffic runs in virtual time (``streamlearn.simulator.traffic``, no I/O), one FTRL
learner per surface. Every ``--publish`` seconds the learner learns every example the
joiner has emitted by then (in emission order) and that model serves the requests until
the next publish. What changes between rows is only *when* each example is emitted
(``W`` is the label window, 8 s; the simulator's engagements come 0–6 s after the
impression, so the window's label is the true one):

* ``window``            — every example when its window closes (request time + W): the
  joiner before, and ``streamlearn up --positives-at-close``;
* ``positives at once`` — a positive when its first positive engagement comes, negatives
  at the window's close (``--positives-at-once``, the joiner now): the same examples with
  the same labels, the positives earlier;
* ``fake negatives``    — every shown item at once as a negative, and a positive copy when
  the engagement comes (Ktena et al., 2019), learned as it is: biased;
* ``fake negatives, FNC`` — the same learner, scores corrected to ``q / (1 − q)``
  (their fake-negative calibration);
* ``fake negatives, FNW`` — the same stream with importance weights from the model's own
  score ``p``: ``1 + p`` for positives, ``(1 − p)(1 + p)`` for negatives (their
  fake-negative weighted loss; weights from the score before each publish's batch).

Per surface, over the second half of the run (the scores served, against the true
labels): AUC, log loss, calibration (mean score / observed rate: 1 is calibrated),
expected CTR of the ranking, and the median "label delay": seconds from the engagement
to the publish that first includes it.

Usage: ``python bench/bench_delayed_feedback.py [--seconds 240] [--seeds 7,8,9]``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamlearn.models.features import Featuriser
from streamlearn.models.metrics import exact_auc
from streamlearn.models.zoo import create
from streamlearn.simulator import World
from streamlearn.simulator.inprocess import POSITIVES, SPEC
from streamlearn.simulator.surfaces import default_surfaces
from streamlearn.simulator.traffic import Traffic

WINDOW_S = 8.0
SCHEMES = (
    "window",
    "positives at once",
    "fake negatives",
    "fake negatives, FNC",
    "fake negatives, FNW",
)


@dataclass
class _Stream:
    """One surface's learner and the examples waiting to be emitted."""

    learner: Any
    heap: list[tuple[float, int, dict[str, Any], int, float]] = field(default_factory=list)
    #: served (score, label, request time), engagement → publish delays
    served: list[tuple[float, int, float]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    ctr: list[float] = field(default_factory=list)


def _emit(scheme: str, t: float, first_engagement: float | None) -> list[tuple[float, int]]:
    """``(emit time, label)`` of one shown item's examples under ``scheme``."""
    if scheme == "window":
        return [(t + WINDOW_S, int(first_engagement is not None))]
    if scheme == "positives at once":
        if first_engagement is not None:
            return [(first_engagement, 1)]
        return [(t + WINDOW_S, 0)]
    out = [(t, 0)]  # fake negatives: a negative at once, a positive copy later
    if first_engagement is not None:
        out.append((first_engagement, 1))
    return out


def run(scheme: str, seed: int, seconds: float, publish_s: float) -> dict[str, dict[str, Any]]:
    """One run of ``seconds`` of virtual traffic; figures per surface."""
    world = World(seed)
    traffic = Traffic(world, default_surfaces(world), 150.0, "bench", 0.3)
    fz = Featuriser(SPEC)
    streams = {s: _Stream(create("ftrl", SPEC, seed=seed)) for s in POSITIVES}
    fnc = scheme == "fake negatives, FNC"
    fnw = scheme == "fake negatives, FNW"
    seq = 0
    next_publish = publish_s

    def publish(now: float) -> None:
        for st in streams.values():
            rows, ys, delays = [], [], []
            while st.heap and st.heap[0][0] <= now:
                _, _, row, label, engaged_at = heapq.heappop(st.heap)
                rows.append(row)
                ys.append(label)
                if label == 1 and engaged_at >= 0:
                    delays.append(now - engaged_at)
            if not rows:
                continue
            idx, val = fz.transform_many(rows)
            y = np.asarray(ys, dtype=np.float64)
            if fnw:
                p = st.learner.predict_featurised(idx, val)
                weight = np.where(y == 1, 1.0 + p, (1.0 - p) * (1.0 + p))
                st.learner._learn(idx, val, y, weight)  # the kernel's importance weights
            else:
                st.learner.learn_featurised(idx, val, y)
            if now > seconds / 2:
                st.delays.extend(delays)

    score: Callable[[np.ndarray], np.ndarray] = (
        (lambda q: np.clip(q / np.maximum(1.0 - q, 1e-9), 0.0, 1.0)) if fnc else (lambda q: q)
    )
    while (planned := traffic.plan()).t <= seconds:
        t = planned.t
        while next_publish <= t:
            publish(next_publish)
            next_publish += publish_s
        surface = planned.surface.name
        st = streams[surface]
        rows = planned.rows()
        scores = score(st.learner.predict_featurised(*fz.transform_many(rows)))
        outcome = traffic.show(planned, scores.tolist())
        first: dict[str, float] = {}
        for delay, type_, shown in outcome.engagements:
            if type_ in POSITIVES[surface]:
                first[shown.item_id] = min(first.get(shown.item_id, np.inf), t + delay)
        by_id = {r["item_id"]: (r, float(sc)) for r, sc in zip(rows, scores, strict=True)}
        for shown in outcome.shown:
            row, sc = by_id[shown.item_id]
            engaged = first.get(shown.item_id)
            if t > seconds / 2:
                st.served.append((sc, int(engaged is not None), t))
            for emit_at, label in _emit(scheme, t, engaged):
                seq += 1
                at = engaged if (label == 1 and engaged is not None) else -1.0
                heapq.heappush(st.heap, (emit_at, seq, row, label, at))
        if t > seconds / 2:
            st.ctr.append(outcome.expected.model)
    out = {}
    for s, st in streams.items():
        p = np.array([x[0] for x in st.served])
        y = np.array([x[1] for x in st.served])
        pc = np.clip(p, 1e-15, 1 - 1e-15)
        out[s] = {
            "auc": exact_auc(y, p),
            "logloss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log1p(-pc))),
            "calibration": float(p.mean() / y.mean()),
            "ctr_model": float(np.mean(st.ctr)),
            "label_delay_p50_s": statistics.median(st.delays) if st.delays else None,
            "served": int(y.size),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--seeds", default="7,8,9")
    ap.add_argument("--publish", type=float, default=1.0, help="seconds between publishes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for scheme in SCHEMES:
        for seed in seeds:
            for surface, figs in run(scheme, seed, args.seconds, args.publish).items():
                results.setdefault(surface, {}).setdefault(scheme, []).append(figs)
    print(
        f"{args.seconds:.0f} s of virtual traffic x seeds {seeds}, publish every "
        f"{args.publish:g} s, label window {WINDOW_S:g} s; second half, means over seeds\n"
    )
    for surface, by_scheme in results.items():
        print(f"### {surface}\n")
        print("| emission | AUC | log loss | calibration | expected CTR | label delay p50 s |")
        print("|---|---:|---:|---:|---:|---:|")
        for scheme, runs in by_scheme.items():

            def mean(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return float(np.mean([r[key] for r in runs]))

            print(
                f"| {scheme} | {mean('auc'):.4f} | {mean('logloss'):.4f} | "
                f"{mean('calibration'):.3f} | {100 * mean('ctr_model'):.2f}% | "
                f"{mean('label_delay_p50_s'):.2f} |"
            )
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
