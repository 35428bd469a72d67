"""Where flow work runs: Ray tasks, on a local Ray or on a cluster.

A step that declares resources (``@flow.step(cpus=1, gpus="auto")``) runs as a Ray task
that asks the scheduler for them; a sweep runs each configuration as a Ray task. Ray is
the scheduler, not a dependency of the steps: a step is a plain function and runs
in-process when no executor is given (the engine's default, and the unit tests').

``RayConfig()`` starts a local Ray in this process on first use (``ray.init``: a
raylet, a GCS and an object store, listening on 127.0.0.1 only; no dashboard, worker
logs kept out of the driver's output) and :func:`shutdown` stops it.
``RayConfig(address="auto")`` or ``address="HOST:PORT"`` joins a running cluster
instead (``ray start --head`` on one machine, ``ray start --address=…`` on the
others). On a cluster the data directory (step cache, registry) must be a file system
every node sees.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streamlearn.models.extras import require

log = logging.getLogger(__name__)

#: ``gpus="auto"``: one GPU when the cluster has any, else none (the step runs on CPU).
AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class Resources:
    """What one step (or one sweep configuration) asks the scheduler for."""

    cpus: float = 1.0
    gpus: float | Literal["auto"] = 0.0

    def resolve(self, cluster_gpus: float) -> tuple[float, float]:
        """``(cpus, gpus)`` to request from a cluster that has ``cluster_gpus`` GPUs."""
        if self.gpus == AUTO:
            return self.cpus, 1.0 if cluster_gpus >= 1 else 0.0
        return self.cpus, float(self.gpus)


@dataclass(frozen=True)
class RayConfig:
    """Which Ray to use. ``address=None`` starts a local one with ``num_cpus`` CPUs (all
    cores when None) and ``num_gpus`` GPUs (those Ray detects when None)."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    #: bytes of shared memory for the local object store (Ray's default when None)
    object_store_bytes: int | None = 256 * 1024 * 1024


def _loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only. On Linux Ray replaces a loopback node
    address with the machine's routable one (so other machines could join) and its
    servers listen there; with Ray's own switch for single-machine clusters off, every
    Ray process (its workers inherit the variable) stays on loopback."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by ray._private.services


def connect(config: RayConfig) -> bool:
    """Initialise Ray for this process unless it is already (a Ray worker is). True when
    this call started or joined it (so the caller should :func:`shutdown` it)."""
    require("flow", "running flow steps on Ray")
    if not config.address:
        _loopback_only()
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if config.address:
        ray.init(address=config.address, **common)
    else:
        ray.init(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            object_store_memory=config.object_store_bytes,
            **common,
        )
    log.info("ray resources=%s", ray.cluster_resources())
    return True


def shutdown() -> None:
    """Disconnect from Ray (and stop the local Ray this process started)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def current_executor() -> RayExecutor | None:
    """A :class:`RayExecutor` on the Ray this process is connected to (inside a Ray task,
    the cluster that runs it), or None when it is connected to none."""
    import ray

    return RayExecutor() if ray.is_initialized() else None


def cluster_gpus() -> float:
    """GPUs the connected cluster has (0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def _ship_by_value(fn: Callable[..., Any]) -> None:
    """A flows file is imported under a generated module name that Ray workers cannot
    import: pickle its functions by value instead of by reference."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is not None and module.__name__.startswith("_streamlearn_flows_"):
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(module)


@dataclass(frozen=True)
class Placement:
    """Where a step ran: the resources its task asked for and the GPUs Ray granted it
    (written to the step's run record, so a run says what it got, not what it hoped)."""

    executor: str
    cpus: float
    gpus: float
    gpu_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for the run record."""
        return {"cpus": self.cpus, "gpus": self.gpus, "gpu_ids": list(self.gpu_ids)}


def _call(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[Any, list[str]]:
    import ray

    return fn(**kwargs), [str(g) for g in ray.get_gpu_ids()]


class RayExecutor:
    """Runs steps as Ray tasks with the resources they declare
    (``streamlearn.offline.flow.engine``).

    Ray is started (or joined) on the first step that runs, not before: a run whose steps
    all come from the cache pays nothing.
    """

    def __init__(self, config: RayConfig | None = None) -> None:
        require("flow", "running flow steps on Ray")  # now, not at the first step
        self.config = config or RayConfig()
        self.started = False
        self._connected = False

    def _connect(self) -> None:
        if not self._connected:
            self.started = connect(self.config)
            self._connected = True

    def run(
        self, fn: Callable[..., Any], kwargs: Mapping[str, Any], resources: Resources
    ) -> tuple[Any, Placement]:
        """``fn(**kwargs)`` as a Ray task, and where it ran; its own exception is raised
        here, unwrapped."""
        self._connect()
        import ray
        from ray.exceptions import RayTaskError

        cpus, gpus = resources.resolve(cluster_gpus())
        _ship_by_value(fn)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_call)
        log.info("ray task %s cpus=%s gpus=%s", getattr(fn, "__name__", fn), cpus, gpus)
        try:
            value, gpu_ids = ray.get(task.remote(fn, dict(kwargs)))
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if cause is not None:
                raise cause from None
            raise
        return value, Placement("ray", cpus, gpus, tuple(gpu_ids))

    def close(self) -> None:
        """Stop the local Ray if this executor started it."""
        if self.started:
            shutdown()
            self.started = False
