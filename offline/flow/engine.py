"""Running a flow: compute each step's key, reuse its cached output or execute it.

Three ways to run (see :func:`run_flow`): every step; only the steps up to ``until``;
or one ``step`` alone, which loads its upstream outputs from the cache (an upstream
miss is an error naming what to run first). A step that declares resources runs as a task of
the run's ``executor`` (a :class:`~streamlearn.offline.flow.compute.RayExecutor`) when one is given;
its output comes back to this process, which caches it. A step that raises fails the run: its
partial output is removed, upstream outputs stay cached, downstream steps are marked
``skipped``, the run record says which step failed and why, and
:class:`FlowStepError` is raised.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streamlearn.offline.errors import FlowError, FlowStepError
from streamlearn.offline.flow.cache import StepCache, canonical_json, code_identity, step_key
from streamlearn.offline.flow.compute import Placement, Resources
from streamlearn.offline.flow.context import ProgressFn, StepContext, StepProgress
from streamlearn.offline.flow.graph import CTX, RESOURCES, Flow, Step
from streamlearn.offline.flow.runs import new_run_id, now_iso, summarize, write_record
from streamlearn.offline.flow.values import return_type
from streamlearn.offline.lineage import code_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepEvent:
    """A step started, finished (``executed``/``cached``) or ``failed``."""

    flow: str
    step: str
    kind: str
    key: str
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class RunResult:
    """A finished run: its record (lineage), where it is stored, and the step outputs."""

    record: dict[str, Any]
    path: Path
    outputs: dict[str, Any]


Listener = Callable[[StepEvent], None]


class Executor(Protocol):
    """Runs a step function elsewhere (a Ray task) with the resources it declares."""

    def run(
        self, fn: Callable[..., Any], kwargs: Mapping[str, Any], resources: Resources
    ) -> tuple[Any, Placement]:
        """``fn(**kwargs)``, run where ``resources`` are, and where it ran (what was asked
        for and granted); raises what ``fn`` raised."""
        ...


def _plan(flow: Flow, step: str | None, until: str | None) -> tuple[list[str], set[str]]:
    """(steps to consider in order, steps that must come from the cache)."""
    if step is not None and until is not None:
        raise FlowError(f"expected either step or until, got step={step!r} and until={until!r}")
    if step is not None:
        order = flow.upstream(step)
        return order, set(order) - {step}
    if until is not None:
        return flow.upstream(until), set()
    return list(flow.steps), set()


def _bind(fn: Callable[..., Any], available: Mapping[str, Any]) -> dict[str, Any]:
    sig = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return dict(available)
    return {k: v for k, v in available.items() if k in sig}


class _Run:
    """The state of one run (kept out of :func:`run_flow` to keep it short)."""

    def __init__(
        self,
        flow: Flow,
        params: dict[str, Any],
        root: Path,
        resources: Mapping[str, Any],
        listener: Listener | None,
        on_progress: ProgressFn | None,
        executor: Executor | None = None,
    ) -> None:
        self.flow = flow
        self.executor = executor
        self.params = params
        self.root = Path(root)
        self.cache = StepCache(self.root, flow.name)
        self.resources = resources
        self.listener = listener
        self.on_progress = on_progress
        self.keys: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.record: dict[str, Any] = {
            "flow": flow.name,
            "run_id": new_run_id(),
            "status": "running",
            "started_at": now_iso(),
            "params": summarize(params),
            "code": code_version(),
            "steps": {},
        }
        self.path = write_record(self.root, self.record)

    def lineage(self) -> dict[str, Any]:
        return copy.deepcopy(self.record)

    def emit(self, event: StepEvent) -> None:
        if self.listener is not None:
            self.listener(event)

    def save(self) -> None:
        write_record(self.root, self.record)

    def entry(self, step: Step) -> dict[str, Any]:
        """Compute the step's key (fingerprint included) and start its record entry."""
        params = self.flow.step_params(step, self.params)
        canonical_json(params, f"params of step {step.name!r}")
        inputs = {i: self.keys[i] for i in step.inputs}
        fingerprint = None
        if step.fingerprint is not None:
            fingerprint = step.fingerprint(
                **_bind(step.fingerprint, {**params, RESOURCES: self.resources})
            )
        code = code_identity(step.fn)
        key = step_key(params, inputs, code, fingerprint)
        self.keys[step.name] = key
        entry = {
            "key": key,
            "params": params,
            "inputs": inputs,
            "fingerprint": fingerprint,
            "code": code,
            "path": str(self.cache.path(step.name, key)),
            "started_at": now_iso(),
        }
        self.record["steps"][step.name] = entry
        return entry

    def from_cache(self, step: Step, entry: dict[str, Any]) -> bool:
        hit = self.cache.load(step.name, entry["key"], return_type(step.fn))
        if hit is None:
            return False
        self.outputs[step.name] = hit.value
        entry.update(
            status="cached",
            seconds=0.0,
            output=hit.record.get("output"),
            executed_in_run=hit.record.get("run_id"),
            executed_seconds=hit.record.get("seconds"),
        )
        self.emit(StepEvent(self.flow.name, step.name, "cached", entry["key"]))
        return True

    def execute(self, step: Step, entry: dict[str, Any]) -> None:
        key = entry["key"]
        entry["status"] = "running"
        self.emit(StepEvent(self.flow.name, step.name, "start", key))
        out = self.cache.begin(step.name, key)
        available: dict[str, Any] = {i: self.outputs[i] for i in step.inputs}
        available.update(self.flow.step_params(step, self.params))
        remote = self.executor is not None and step.resources is not None
        if step.takes_ctx:
            available[CTX] = StepContext(
                flow=self.flow.name,
                step=step.name,
                run_id=self.record["run_id"],
                out=out,
                resources=self.resources,
                # a task elsewhere gets the lineage as it is now, and reports no progress
                lineage=functools.partial(copy.deepcopy, self.lineage())
                if remote
                else self.lineage,
                on_progress=None if remote else self.on_progress,
            )
        started = time.monotonic()
        if remote:
            assert self.executor is not None and step.resources is not None
            value, placement = self.executor.run(step.fn, available, step.resources)
            entry["executor"] = placement.executor
            entry["resources"] = placement.to_dict()
        else:
            value = step.fn(**available)
        seconds = round(time.monotonic() - started, 4)
        done = {"status": "executed", "seconds": seconds, "output": summarize(value)}
        meta = {"flow": self.flow.name, "run_id": self.record["run_id"]}
        self.cache.commit(step.name, key, value, {**entry, **done, **meta})
        entry.update(done)
        self.outputs[step.name] = value
        log.info(
            "flow=%s step=%s key=%s executed in %.3fs", self.flow.name, step.name, key, seconds
        )
        self.emit(StepEvent(self.flow.name, step.name, "executed", key, seconds))

    def fail(self, step: str, order: list[str], exc: BaseException) -> FlowStepError:
        error = f"{type(exc).__name__}: {exc}"
        entry = self.record["steps"].setdefault(step, {})
        if entry.get("status") == "running":  # remove the partial output
            self.cache.discard(step, entry["key"])
        entry.update(status="failed", error=error)
        for later in order[order.index(step) + 1 :]:
            self.record["steps"].setdefault(later, {})["status"] = "skipped"
        self.finish("failed", failed_step=step, error=error)
        self.emit(StepEvent(self.flow.name, step, "failed", entry.get("key", ""), error=error))
        upstream = order[: order.index(step)]
        hint = f"upstream outputs ({', '.join(upstream)}) stay cached; " if upstream else ""
        return FlowStepError(
            f"step {step!r} of flow {self.flow.name!r} failed: {error} ({hint}re-run it alone "
            f"with --step {step}; run record {self.path})",
            step,
            self.record,
            self.path,
        )

    def finish(self, status: str, **extra: Any) -> None:
        self.record.update(status=status, finished_at=now_iso(), **extra)
        self.save()


def run_flow(
    flow: Flow,
    params: Mapping[str, Any] | None = None,
    *,
    root: Path,
    resources: Mapping[str, Any] | None = None,
    step: str | None = None,
    until: str | None = None,
    use_cache: bool = True,
    listener: Listener | None = None,
    on_progress: Callable[[StepProgress], None] | None = None,
    executor: Executor | None = None,
) -> RunResult:
    """Run ``flow`` with ``params``, caching step outputs under ``root``.

    ``step``: run that step alone, its upstream outputs taken from the cache.
    ``until``: run that step and what it needs, nothing after it.
    ``use_cache=False``: execute every step even when a cached output exists.
    ``resources``: what steps use but is not a param (not part of any key).
    ``executor``: where steps that declare resources run (in this process when None).
    """
    order, required = _plan(flow, step, until)
    run = _Run(
        flow,
        flow.resolve_params(params or {}),
        root,
        resources or {},
        listener,
        on_progress,
        executor,
    )
    run.record["mode"] = {"step": step, "until": until, "use_cache": use_cache}
    for name in order:
        s = flow.steps[name]
        try:
            entry = run.entry(s)
            if name in required:
                hit = run.from_cache(s, entry)
            else:
                hit = True
                if not (use_cache and run.from_cache(s, entry)):
                    with run.cache.lock(name, entry["key"]):  # a parallel run may finish it
                        if not (use_cache and run.from_cache(s, entry)):
                            run.execute(s, entry)
        except Exception as exc:  # the step's own failure, whatever it raised
            log.debug("flow=%s step=%s failed", flow.name, name, exc_info=True)
            raise run.fail(name, order, exc) from exc
        if not hit:
            msg = (
                f"step {step!r} of flow {flow.name!r} needs the output of {name!r} "
                f"(key {entry['key']}) from the cache, found none: run the flow up to it "
                f"first (--until {name})"
            )
            run.finish("failed", error=msg)
            raise FlowError(msg)
        run.save()
    run.finish("succeeded")
    return RunResult(run.record, run.path, run.outputs)
