"""Sweeps: one flow run per grid configuration, in parallel worker processes.

Workers are started with ``spawn`` (no forked torch or Kafka state) and load the flow
again by name (and module). Runs share the step cache, so steps every configuration
has in common (the replay) run once; the others wait on its lock and reuse it. A
configuration that fails is a ``failed`` row with its error; the sweep goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.errors import FlowError
from offline.flow.catalog import get_flow
from offline.flow.engine import FlowStepError, run_flow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepJob:
    """One configuration to run (everything a worker process needs, picklable)."""

    index: int
    flow: str
    module: str | None
    config: Mapping[str, Any]
    base: Mapping[str, Any]
    root: Path
    resources: Mapping[str, Any] = field(default_factory=dict)
    until: str | None = None


def run_job(job: SweepJob) -> dict[str, Any]:
    """Run one configuration; a row: config, status, the flow's metrics, seconds, error, run."""
    row: dict[str, Any] = {"config": job.index, **job.config}
    started = time.monotonic()
    try:
        flow = get_flow(job.flow, job.module)
        result = run_flow(
            flow,
            {**job.base, **job.config},
            root=job.root,
            resources=job.resources,
            until=job.until,
        )
    except FlowStepError as exc:
        row.update(status="failed", error=str(exc).split(" (", 1)[0], run=str(exc.path))
    except Exception as exc:  # any failure of one configuration is a row, not a crash
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    else:
        metrics = flow.metrics(result.outputs) if flow.metrics else {}
        row.update(status="ok", **metrics, run=str(result.path))
    row["seconds"] = round(time.monotonic() - started, 3)
    return row


def sweep(
    jobs: Sequence[SweepJob],
    workers: int = 2,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``workers`` processes; the rows in configuration order."""
    if workers < 1:
        raise FlowError(f"expected at least 1 worker, got {workers}")
    rows: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, max(len(jobs), 1)), mp_context=ctx) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for fut in as_completed(futures):
            row = fut.result()
            log.info("sweep config=%s status=%s", row["config"], row["status"])
            rows.append(row)
            if on_done is not None:
                on_done(row)
    return sorted(rows, key=lambda r: int(r["config"]))
