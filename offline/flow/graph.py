"""Declaring a workflow: a :class:`Flow` is a small graph of steps written in Python.

A step is a plain function. Its parameters are bound by name:

* a parameter named after one of the step's ``inputs`` receives that upstream step's
  output;
* ``ctx`` receives the :class:`~streamlearn.offline.flow.context.StepContext` (output directory,
  resources such as a Kafka config or a registry, progress, the run's lineage so far);
* any other keyword parameter is a *flow parameter*: its value comes from the run's
  params, else from the flow's declared defaults, else from the function's default;
* a ``**kwargs`` parameter receives the *free* params: those given to the run that no
  step names and the flow does not declare (e.g. a learner's hyper-parameters).

Steps are declared in order and may only name steps declared before them as inputs, so
declaration order is a topological order and the graph cannot have a cycle.

A step that declares resources (``cpus``, ``gpus``; ``gpus="auto"`` asks for one GPU
where the cluster has one) runs as a Ray task asking for them when the run has an
executor (``streamlearn.offline.flow.compute``); the others run in the process that runs the flow.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow.compute import Resources

StepFn = Callable[..., Any]
#: Computes a JSON-safe identity of the external state a step reads (a topic's end
#: offsets, a file's checksum); it joins the step's cache key. Bound like a step, with
#: ``resources`` instead of ``ctx`` and without upstream inputs.
FingerprintFn = Callable[..., Any]

CTX = "ctx"
RESOURCES = "resources"


@dataclass(frozen=True)
class Step:
    """One declared step: its function, upstream inputs and how its params bind."""

    name: str
    fn: StepFn
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    takes_free_params: bool
    takes_ctx: bool
    fingerprint: FingerprintFn | None = None
    description: str = ""
    #: what the step asks the scheduler for; None: it runs in the flow's own process
    resources: Resources | None = None


def _check_name(what: str, name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise FlowError(f"{what} must be a Python identifier not starting with '_', got {name!r}")


def _signature_params(fn: StepFn, inputs: Sequence[str], where: str) -> tuple[list[str], bool]:
    """(keyword params, takes **kwargs) of ``fn``; checks that every input is a parameter."""
    sig = inspect.signature(fn)
    names: list[str] = []
    free = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            free = True
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise FlowError(f"{where}: expected no *args parameter, got *{p.name}")
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise FlowError(
                f"{where}: expected parameters bound by name, got positional-only {p.name}"
            )
        elif p.name not in inputs:
            names.append(p.name)
    missing = [i for i in inputs if i not in sig.parameters]
    if missing:
        raise FlowError(
            f"{where}: expected a parameter for each input {list(inputs)}, missing {missing}"
        )
    return names, free


def _resources(
    where: str, cpus: float | None, gpus: float | Literal["auto"] | None
) -> Resources | None:
    if cpus is None and gpus is None:
        return None
    if cpus is not None and cpus < 0:
        raise FlowError(f"{where}: expected cpus >= 0, got {cpus}")
    if gpus is not None and gpus != "auto" and (isinstance(gpus, str) or gpus < 0):
        raise FlowError(f"{where}: expected gpus >= 0 or 'auto', got {gpus!r}")
    return Resources(1.0 if cpus is None else cpus, 0.0 if gpus is None else gpus)


@dataclass
class Flow:
    """A named workflow: declared params with defaults and an ordered list of steps.

    ``prepare`` maps the resolved params of a run to the params its steps see (e.g.
    drop what does not apply to the chosen learner), before any cache key is computed.
    ``metrics`` turns the outputs of a run (``{step: output}``, only the steps that ran)
    into a flat row of scalars for sweep tables; ``headline`` names the metrics a sweep
    plots by default.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    metrics: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    headline: tuple[str, ...] = ()
    steps: dict[str, Step] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        _check_name("a flow name", self.name)
        for p in self.params:
            _check_name(f"flow {self.name!r}: a param name", p)

    def step(
        self,
        inputs: Sequence[str] = (),
        *,
        name: str | None = None,
        fingerprint: FingerprintFn | None = None,
        cpus: float | None = None,
        gpus: float | Literal["auto"] | None = None,
    ) -> Callable[[StepFn], StepFn]:
        """Decorator declaring ``fn`` as the next step, fed by the ``inputs`` steps.

        ``cpus``/``gpus`` make it a Ray task asking for them (see the module docstring).
        """

        def decorate(fn: StepFn) -> StepFn:
            self.add_step(fn, inputs, name=name, fingerprint=fingerprint, cpus=cpus, gpus=gpus)
            return fn

        return decorate

    def add_step(
        self,
        fn: StepFn,
        inputs: Sequence[str] = (),
        *,
        name: str | None = None,
        fingerprint: FingerprintFn | None = None,
        cpus: float | None = None,
        gpus: float | Literal["auto"] | None = None,
    ) -> Step:
        """Declare ``fn`` as the next step (the decorator's plain form)."""
        step_name = name or fn.__name__
        where = f"flow {self.name!r} step {step_name!r}"
        _check_name(f"{where}: the step name", step_name)
        if step_name in self.steps:
            raise FlowError(f"{where}: expected a new step name, it is already declared")
        unknown = [i for i in inputs if i not in self.steps]
        if unknown:
            raise FlowError(
                f"{where}: inputs must be steps declared before it {list(self.steps)}, "
                f"got {unknown}"
            )
        names, free = _signature_params(fn, inputs, where)
        params = tuple(n for n in names if n != CTX)
        if fingerprint is not None:
            fp_names, _ = _signature_params(fingerprint, (), f"{where} fingerprint")
            stray = [n for n in fp_names if n != RESOURCES and n not in params]
            if stray:
                raise FlowError(
                    f"{where}: the fingerprint may take 'resources' and the step's params "
                    f"{list(params)}, got {stray}"
                )
        step = Step(
            name=step_name,
            fn=fn,
            inputs=tuple(inputs),
            params=params,
            takes_free_params=free,
            takes_ctx=CTX in names,
            fingerprint=fingerprint,
            description=(inspect.getdoc(fn) or "").split("\n", 1)[0],
            resources=_resources(where, cpus, gpus),
        )
        self.steps[step_name] = step
        return step

    def param_names(self) -> set[str]:
        """Every param name the flow knows: declared ones and those its steps take."""
        names = set(self.params)
        for s in self.steps.values():
            names.update(s.params)
        return names

    def takes_free_params(self) -> bool:
        """Whether some step takes ``**kwargs`` (so unknown params are allowed)."""
        return any(s.takes_free_params for s in self.steps.values())

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Declared defaults overlaid with ``given``, then ``prepare``d.

        Unknown names are an error unless some step takes free params.
        """
        if not self.takes_free_params():
            unknown = sorted(set(given) - self.param_names())
            if unknown:
                raise FlowError(
                    f"flow {self.name!r} takes params {sorted(self.param_names())}, "
                    f"got unknown {unknown}"
                )
        params = {**dict(self.params), **dict(given)}
        return self.prepare(params) if self.prepare else params

    def step_params(self, step: Step, params: Mapping[str, Any]) -> dict[str, Any]:
        """The params ``step`` receives from the resolved run ``params``."""
        sig = inspect.signature(step.fn).parameters
        out: dict[str, Any] = {}
        for n in step.params:
            if n in params:
                out[n] = params[n]
            elif sig[n].default is not inspect.Parameter.empty:
                out[n] = sig[n].default
            else:
                raise FlowError(
                    f"flow {self.name!r} step {step.name!r} needs param {n!r} "
                    "(no default), got none"
                )
        if step.takes_free_params:
            known = self.param_names()
            out.update({k: v for k, v in params.items() if k not in known})
        return out

    def upstream(self, name: str) -> list[str]:
        """``name`` and every step it depends on, in declaration order."""
        self.get(name)
        needed = {name}
        for s in reversed(list(self.steps.values())):
            if s.name in needed:
                needed.update(s.inputs)
        return [s for s in self.steps if s in needed]

    def get(self, name: str) -> Step:
        """The step called ``name``; :class:`FlowError` naming the steps when unknown."""
        try:
            return self.steps[name]
        except KeyError:
            raise FlowError(
                f"flow {self.name!r} has steps {list(self.steps)}, got {name!r}"
            ) from None

    def describe(self) -> dict[str, Any]:
        """Name, description, params and the step graph, JSON-safe (for ``flow list``)."""
        return {
            "name": self.name,
            "description": self.description,
            "params": {k: v for k, v in self.params.items()},
            "steps": [
                {
                    "name": s.name,
                    "inputs": list(s.inputs),
                    "params": list(s.params),
                    "description": s.description,
                    "resources": None
                    if s.resources is None
                    else {"cpus": s.resources.cpus, "gpus": s.resources.gpus},
                }
                for s in self.steps.values()
            ],
        }
