"""Workflows: cached step graphs declared in Python, run alone or swept over a grid.

Declare a flow, then run it (``streamlearn flow run NAME``)::

    from streamlearn.offline.flow import Flow

    demo = Flow("demo", params={"n": 10})

    @demo.step()
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @demo.step(inputs=["numbers"])
    def total(numbers: list[int], scale: float = 1.0) -> float:
        return sum(numbers) * scale

Modules: ``graph`` (declaring), ``cache`` (keys, outputs on disk), ``engine`` (running,
lineage), ``runs`` (run records), ``catalog`` (finding flows), ``grid``/``sweep``/
``report`` (sweeps), ``retrain`` (the built-in flow).
"""

from streamlearn.offline.flow.context import StepContext, StepProgress
from streamlearn.offline.flow.engine import FlowStepError, RunResult, StepEvent, run_flow
from streamlearn.offline.flow.graph import Flow, Step

__all__ = [
    "Flow",
    "FlowStepError",
    "RunResult",
    "Step",
    "StepContext",
    "StepEvent",
    "StepProgress",
    "run_flow",
]
