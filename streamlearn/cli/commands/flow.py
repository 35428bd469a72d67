"""``streamlearn flow list|run|sweep``: cached training workflows and parameter sweeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID

from streamlearn.cli import options as o
from streamlearn.cli.settings import data_dir
from streamlearn.cli.ui import console, fail, progress_bar
from streamlearn.models.registry import FileRegistry
from streamlearn.offline.flow.catalog import discover, get_flow
from streamlearn.offline.flow.compute import RayConfig, RayExecutor
from streamlearn.offline.flow.context import StepProgress
from streamlearn.offline.flow.engine import StepEvent, run_flow
from streamlearn.offline.flow.graph import Flow
from streamlearn.offline.flow.grid import expand_grid
from streamlearn.offline.flow.report import write_results
from streamlearn.offline.flow.sweep import SweepJob, sweep

FlowName = Annotated[
    str, typer.Argument(envvar="STREAMLEARN_FLOW", help="Flow name (see `streamlearn flow list`).")
]
Module = Annotated[
    str | None,
    typer.Option(
        "--module",
        envvar="STREAMLEARN_FLOW_MODULE",
        help="Your flows: a .py file or a dotted module declaring Flow objects.",
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until",
        envvar="STREAMLEARN_FLOW_UNTIL",
        help="Run this step and what it needs, nothing after it (e.g. evaluate: no publish).",
    ),
]


RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="STREAMLEARN_RAY_ADDRESS",
        help="Ray cluster to run on (HOST:PORT, ray://…, or auto for the one `ray start` "
        "runs here); unset: a local Ray started for this command.",
    ),
]
RayCpus = Annotated[
    int | None,
    typer.Option(
        "--ray-cpus",
        envvar="STREAMLEARN_RAY_CPUS",
        min=1,
        help="CPUs of the local Ray (default: every core); ignored with --ray-address.",
    ),
]


def _resources(root: Path, kafka: o.KafkaOptions) -> dict[str, Any]:
    """What steps use but is not a param: the registry, and Kafka when a broker is given."""
    resources: dict[str, Any] = {"registry": FileRegistry(root / "registry")}
    if kafka.given:
        resources["kafka"] = kafka.config()
    return resources


class _StepDisplay:
    """One progress line per step: executing, cached, done or failed."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def _task(self, step: str) -> TaskID:
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(step, total=None, note="")
        return self.tasks[step]

    def on_event(self, e: StepEvent) -> None:
        task = self._task(e.step)
        if e.kind == "start":
            self.bar.update(task, note=f"running (key {e.key[:12]})")
        elif e.kind == "failed":
            self.bar.update(task, note=f"[red]failed[/red]: {e.error}")
            self.bar.stop_task(task)
        else:
            note = "cached" if e.kind == "cached" else f"done in {e.seconds:.2f}s"
            self.bar.update(task, total=1, completed=1, note=f"{note} (key {e.key[:12]})")

    def on_progress(self, p: StepProgress) -> None:
        self.bar.update(self._task(p.step), completed=p.done, total=p.total, note=p.note)


def _describe(flow: Flow) -> str:
    graph = ", ".join(
        f"{s.name}" + (f" ← {'+'.join(s.inputs)}" if s.inputs else "") for s in flow.steps.values()
    )
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in flow.params.items())
    return f"{flow.name}: {flow.description}\n  steps: {graph}\n  params: {params}"


def register(app: typer.Typer) -> None:
    """Add the ``flow`` group."""
    group = typer.Typer(
        help="Workflows: cached step graphs (replay → train → evaluate → export → publish) "
        "and parameter sweeps.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="flow")
    group.command("list")(list_cmd)
    group.command("run")(run_cmd)
    group.command("sweep")(sweep_cmd)


def list_cmd(
    module: Module = None,
    as_json: Annotated[
        bool, typer.Option("--json", envvar="STREAMLEARN_FLOW_JSON", help="Print JSON.")
    ] = False,
) -> None:
    """List the flows (built-in and --module's) with their steps and params."""
    flows = discover(module)
    if as_json:
        typer.echo(json.dumps([f.describe() for f in flows.values()], indent=1, default=str))
        return
    for flow in flows.values():
        typer.echo(_describe(flow))


@o.kafka_options()
def run_cmd(
    kafka_opts: o.KafkaOptions,
    flow_name: FlowName,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            envvar="STREAMLEARN_FLOW_PARAMS",
            help="Flow param key=value (repeatable; JSON values, else text).",
        ),
    ] = None,
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            envvar="STREAMLEARN_FLOW_STEP",
            help="Run this step alone, its upstream outputs from the cache.",
        ),
    ] = None,
    until: Until = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            envvar="STREAMLEARN_FLOW_NO_CACHE",
            help="Execute every step even when its output is cached.",
        ),
    ] = False,
    module: Module = None,
    data: o.DataDir = o.DEFAULT_DATA_DIR,
    ray_address: RayAddress = None,
    ray_cpus: RayCpus = None,
    quiet: o.Quiet = False,
) -> None:
    """Run a flow: cached steps are reused, the run's lineage is written as JSON.

    Steps that declare resources (the training steps) run as Ray tasks.
    """
    root = data_dir(data)
    flow = get_flow(flow_name, module)
    executor: RayExecutor | None = None
    if any(s.resources is not None for s in flow.steps.values()):
        executor = RayExecutor(RayConfig(ray_address, ray_cpus))
    try:
        with progress_bar(not quiet) as bar:
            display = _StepDisplay(bar)
            result = run_flow(
                flow,
                o.parse_params(param),
                root=root / "flows",
                resources=_resources(root, kafka_opts),
                step=step,
                until=until,
                use_cache=not no_cache,
                listener=display.on_event,
                on_progress=display.on_progress,
                executor=executor,
            )
    finally:
        if executor is not None:
            executor.close()
    steps = {
        name: {k: e.get(k) for k in ("status", "key", "seconds")}
        for name, e in result.record["steps"].items()
    }
    summary = {
        "flow": flow.name,
        "run_id": result.record["run_id"],
        "status": result.record["status"],
        "lineage": str(result.path),
        "steps": steps,
        "metrics": flow.metrics(result.outputs) if flow.metrics else {},
    }
    typer.echo(json.dumps(summary, indent=1, default=str))


@o.kafka_options()
def sweep_cmd(
    kafka_opts: o.KafkaOptions,
    flow_name: FlowName,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            envvar="STREAMLEARN_SWEEP_OUT",
            help="Directory for results.csv, results.md and results.png.",
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            envvar="STREAMLEARN_SWEEP_PARAMS",
            help="Grid param key=v1,v2,… (repeatable; the grid is their product).",
        ),
    ] = None,
    fixed: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            envvar="STREAMLEARN_SWEEP_SET",
            help="Param key=value shared by every configuration (commas kept).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="STREAMLEARN_SWEEP_WORKERS",
            min=1,
            help="Configurations run at once (each a Ray task).",
        ),
    ] = 2,
    max_configs: Annotated[
        int,
        typer.Option(
            "--max-configs",
            envvar="STREAMLEARN_SWEEP_MAX_CONFIGS",
            min=1,
            help="Refuse grids with more configurations than this.",
        ),
    ] = 64,
    plot_metric: Annotated[
        list[str] | None,
        typer.Option(
            "--plot-metric",
            envvar="STREAMLEARN_SWEEP_PLOT_METRICS",
            help="Metric to plot (repeatable; default: the flow's headline metrics).",
        ),
    ] = None,
    until: Until = None,
    module: Module = None,
    data: o.DataDir = o.DEFAULT_DATA_DIR,
    ray_address: RayAddress = None,
    ray_cpus: RayCpus = None,
    quiet: o.Quiet = False,
) -> None:
    """Run a flow over a grid of params, each configuration a Ray task; write a table
    and a plot."""
    root = data_dir(data)
    flow = get_flow(flow_name, module)
    grid = o.parse_grid(param)
    base = o.parse_params(fixed, "--set")
    configs = expand_grid(grid, max_configs)
    for config in configs:
        flow.resolve_params({**base, **config})
    if until is not None:
        flow.get(until)
    resources = _resources(root, kafka_opts)
    flows_root = (root / "flows").resolve()
    jobs = [
        SweepJob(i, flow.name, module, c, base, flows_root, resources, until)
        for i, c in enumerate(configs)
    ]
    with progress_bar(not quiet) as bar:
        task = bar.add_task(f"sweep {flow.name}", total=len(jobs), note="")

        def on_done(row: dict[str, Any]) -> None:
            bar.update(task, advance=1, note=f"#{row['config']} {row['status']}")

        rows = sweep(jobs, workers, on_done, RayConfig(ray_address, ray_cpus))
    metrics = plot_metric or list(flow.headline)
    try:
        paths = write_results(out, rows, list(grid), metrics, f"Sweep of flow {flow.name}")
    except OSError as exc:
        raise fail(f"cannot write the results to {out}: {exc}") from None
    typer.echo(paths["markdown"].read_text())
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} configurations failed[/red]")
        raise typer.Exit(1)
