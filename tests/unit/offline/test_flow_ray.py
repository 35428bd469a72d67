"""Steps that declare resources run as Ray tasks on a real local Ray (2 CPUs, no
dashboard): the step cache and lineage work as in-process, a step's own error comes back
unwrapped, ``gpus="auto"`` asks for a GPU only where there is one (the run record says
what was asked for and granted; the tests hold with or without a GPU), and the local Ray
listens on loopback only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow import Flow, FlowStepError, StepContext, run_flow
from streamlearn.offline.flow.compute import (
    RayConfig,
    RayExecutor,
    Resources,
    cluster_gpus,
    connect,
    shutdown,
)


def make_flow() -> Flow:
    flow = Flow("raydemo", params={"n": 4, "fail": False})

    @flow.step()
    def numbers(n: int) -> dict[str, Any]:
        return {"values": list(range(n)), "pid": os.getpid()}

    @flow.step(inputs=["numbers"], cpus=1, gpus="auto")
    def total(ctx: StepContext, numbers: dict[str, Any], fail: bool) -> dict[str, Any]:
        if fail:
            raise ValueError("expected fail=False, got True")
        (ctx.out / "total.txt").write_text(str(sum(numbers["values"])))
        return {
            "total": sum(numbers["values"]),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "upstream": sorted(ctx.lineage()["steps"]),
        }

    return flow


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    """One local Ray (2 CPUs) for the module's tests, stopped after them."""
    started = connect(RayConfig(num_cpus=2))
    yield RayExecutor()
    if started:
        shutdown()


def test_resources_resolve_auto_gpus() -> None:
    assert Resources(cpus=2, gpus="auto").resolve(cluster_gpus=0) == (2, 0.0)
    assert Resources(cpus=1, gpus="auto").resolve(cluster_gpus=8) == (1, 1.0)
    assert Resources(gpus=0.5).resolve(cluster_gpus=8) == (1.0, 0.5)
    with pytest.raises(FlowError, match="gpus >= 0 or 'auto'"):
        Flow("bad").step(name="step", gpus="many")(lambda: None)  # type: ignore[arg-type]


def test_a_step_with_resources_runs_as_a_ray_task_and_is_cached(
    executor: RayExecutor, tmp_path: Path
) -> None:
    flow = make_flow()
    first = run_flow(flow, root=tmp_path, executor=executor)
    out = first.outputs
    assert out["total"]["total"] == 6
    assert out["numbers"]["pid"] == os.getpid()  # no resources: runs here
    assert out["total"]["pid"] != os.getpid()  # a Ray worker process
    assert out["total"]["upstream"] == ["numbers", "total"]
    step = first.record["steps"]["total"]
    assert step["executor"] == "ray" and step["status"] == "executed"
    # gpus="auto": one GPU asked for where the cluster has one (else none), and granted
    asked = 1.0 if cluster_gpus() >= 1 else 0.0
    assert step["resources"]["cpus"] == 1 and step["resources"]["gpus"] == asked
    assert len(step["resources"]["gpu_ids"]) == asked
    assert out["total"]["gpus"] == step["resources"]["gpu_ids"]  # what the task saw
    assert (Path(step["path"]) / "total.txt").read_text() == "6"
    again = run_flow(flow, root=tmp_path, executor=executor)
    assert {s["status"] for s in again.record["steps"].values()} == {"cached"}
    assert again.outputs["total"] == out["total"]


def test_a_failing_ray_step_fails_the_run_with_its_own_error(
    executor: RayExecutor, tmp_path: Path
) -> None:
    with pytest.raises(FlowStepError) as exc:
        run_flow(make_flow(), {"fail": True}, root=tmp_path, executor=executor)
    assert exc.value.step == "total"
    assert exc.value.record["steps"]["total"]["error"] == (
        "ValueError: expected fail=False, got True"
    )
    assert exc.value.record["steps"]["numbers"]["status"] == "executed"


def _listening(pids: set[int]) -> list[str]:
    """The addresses the processes ``pids`` listen on (TCP, from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                out.append(cols[1])
    return out


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_the_local_ray_listens_on_loopback_only(executor: RayExecutor) -> None:
    addresses = _listening(_descendants(os.getpid()) | {os.getpid()})
    assert addresses, "found no listening socket of the local Ray"
    loopback = (  # 127.0.0.1, ::ffff:127.0.0.1, ::1 as /proc/net/tcp{,6} write them
        "0100007F:",
        "0000000000000000FFFF00000100007F:",
        "00000000000000000000000001000000:",
    )
    assert all(a.startswith(loopback) for a in addresses), addresses
