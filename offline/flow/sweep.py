"""Sweeps: one flow run per grid configuration, each a Ray task.

A configuration's task loads the flow again by name (and module) in its Ray worker and
runs it there; its steps that declare resources become Ray tasks of their own (a task
blocked on them lends its CPU back to the scheduler). At most ``workers``
configurations are in flight at once. Runs share the step cache, so steps every
configuration has in common (the replay) run once; the others wait on its lock and
reuse it. A configuration that fails is a ``failed`` row with its error; the sweep goes
on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlearn.models.extras import require
from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow.catalog import get_flow
from streamlearn.offline.flow.compute import RayConfig, connect, current_executor, shutdown
from streamlearn.offline.flow.engine import FlowStepError, run_flow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepJob:
    """One configuration to run (everything its Ray task needs, picklable)."""

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
            executor=current_executor(),  # in a Ray task: the cluster that runs it
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
    ray: RayConfig | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` as Ray tasks, at most ``workers`` at once, on the Ray ``ray`` names
    (a local one, started and stopped here, by default); the rows in configuration
    order."""
    if workers < 1:
        raise FlowError(f"expected at least 1 worker, got {workers}")
    require("flow", "a sweep (its configurations run as Ray tasks)")
    import ray as ray_api

    started = connect(ray or RayConfig())
    try:
        task = ray_api.remote(num_cpus=1, max_retries=0)(run_job)
        queue = list(jobs)
        running: dict[Any, SweepJob] = {}
        rows: list[dict[str, Any]] = []
        while queue or running:
            while queue and len(running) < workers:
                job = queue.pop(0)
                running[task.remote(job)] = job
            done, _ = ray_api.wait(list(running), num_returns=1)
            job = running.pop(done[0])
            try:
                row = ray_api.get(done[0])
            except ray_api.exceptions.RayError as exc:  # the task's process died
                row = {"config": job.index, **job.config, "status": "failed"}
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            log.info("sweep config=%s status=%s", row["config"], row["status"])
            rows.append(row)
            if on_done is not None:
                on_done(row)
    finally:
        if started:
            shutdown()
    return sorted(rows, key=lambda r: int(r["config"]))
