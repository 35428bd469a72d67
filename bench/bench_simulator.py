"""The simulator's logs: how real they look, and what a learner makes of them.

Runs two minutes of virtual traffic (150 requests/s, 30% ads) without I/O
(``streamlearn.simulator.inprocess``), ranked by FTRL learners (one per surface) that learn from
what they ranked, for two worlds side by side:

* ``realistic`` — the defaults: Zipf-like item popularity, user sessions, heavy users;
* ``uniform``   — the old simulator's assumptions: uniform candidate pools, independent
  requests (the baseline the shape figures are read against).

and, on the realistic world, FTRL at the online trainer's batch of 256 against one
example at a time (batch 1), with the examples/s of the whole in-process loop.

Prints the log's shape (top 1%/10% of items' share of impressions, top 1%/10% of users'
share of events, session lengths, burstiness) and, per surface, progressive AUC over the
second half and the expected CTR of the learner's ranking, random ranking and the oracle.
Usage: ``python bench/bench_simulator.py [--seconds 120] [--seed 7] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from streamlearn.simulator import SessionParams, World, WorldParams
from streamlearn.simulator.inprocess import InProcessRun, run_inprocess

FTRL = {"alpha": 0.1, "beta": 0.1}  # the feed model's settings
UNIFORM = (
    WorldParams(popularity_exponent=0.0, activity_skew=1.5),
    SessionParams(mean_requests=1.0, length_exponent=0.0, min_away_s=0.0),
)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    runs: dict[str, tuple[InProcessRun, float]] = {}
    configs: dict[str, tuple[WorldParams | None, SessionParams | None, int]] = {
        "realistic": (None, None, 256),
        "uniform": (*UNIFORM, 256),
        "realistic, batch 1": (None, None, 1),
    }
    for name, (params, sessions, batch) in configs.items():
        started = time.perf_counter()
        run = run_inprocess(
            World(args.seed, params=params),
            seconds=args.seconds,
            sessions=sessions,
            params=FTRL,
            batch_size=batch,
        )
        runs[name] = (run, time.perf_counter() - started)

    print(f"## Log shape ({args.seconds:.0f} s of virtual traffic, seed {args.seed})\n")
    print("| measure | realistic | uniform (old simulator; ads Zipf in both) |")
    print("|---|---:|---:|")
    real, unif = runs["realistic"][0].shape, runs["uniform"][0].shape
    rows: list[tuple[str, Any, Any]] = [
        ("requests", real["requests"], unif["requests"]),
        (
            "top 1% of feed items' share of impressions",
            _pct(real["top1pct_items_impression_share"]["feed"]),
            _pct(unif["top1pct_items_impression_share"]["feed"]),
        ),
        (
            "top 10% of feed items' share of impressions",
            _pct(real["top10pct_items_impression_share"]["feed"]),
            _pct(unif["top10pct_items_impression_share"]["feed"]),
        ),
        (
            "top 1% of ads' share of ad impressions",
            _pct(real["top1pct_items_impression_share"]["ads"]),
            _pct(unif["top1pct_items_impression_share"]["ads"]),
        ),
        (
            "top 1% of users' share of events",
            _pct(real["top1pct_users_event_share"]),
            _pct(unif["top1pct_users_event_share"]),
        ),
        (
            "top 10% of users' share of events",
            _pct(real["top10pct_users_event_share"]),
            _pct(unif["top10pct_users_event_share"]),
        ),
        (
            f"requests per session (cut at {real['session_gap_s']:.0f} s of silence): "
            "mean / p50 / p90 / max",
            f"{real['session_requests_mean']:.1f} / {real['session_requests_p50']} / "
            f"{real['session_requests_p90']} / {real['session_requests_max']}",
            f"{unif['session_requests_mean']:.1f} / {unif['session_requests_p50']} / "
            f"{unif['session_requests_p90']} / {unif['session_requests_max']}",
        ),
        (
            "one-request sessions",
            _pct(real["single_request_sessions_share"]),
            _pct(unif["single_request_sessions_share"]),
        ),
        (
            "burstiness (median CV of a user's gaps; Poisson = 1)",
            _f(real["user_gap_cv"], 2),
            _f(unif["user_gap_cv"], 2),
        ),
    ]
    for label, a, b in rows:
        print(f"| {label} | {a} | {b} |")

    print("\n## What FTRL learns (progressive AUC over the second half; expected CTR)\n")
    print("| world, learner | surface | examples | AUC | CTR model | random | oracle | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, (run, seconds) in runs.items():
        for surface in ("feed", "ads"):
            c = run.ctr.get(surface, {})
            print(
                f"| {name} | {surface} | {run.examples.get(surface, 0)} | "
                f"{_f(run.auc.get(surface))} | {_pct(c.get('model'))} | "
                f"{_pct(c.get('random'))} | {_pct(c.get('oracle'))} | {seconds:.1f} |"
            )
    if args.json is not None:
        out = {
            name: {"shape": r.shape, "auc": r.auc, "ctr": r.ctr, "examples": r.examples, "s": s}
            for name, (r, s) in runs.items()
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
