"""The simulator's public names; the parts live in :mod:`streams.simulation`.

>>> world = World(seed=7)                                     # doctest: +SKIP
>>> sim = Simulator(world, kafka, Topics(kafka.topic_prefix), "http://127.0.0.1:8080")
>>> sim.run(max_seconds=120)["ctr_model_expected"]            # doctest: +SKIP
"""

from __future__ import annotations

from streams.simulation.behaviour import Behaviour
from streams.simulation.loop import LoopOptions, Simulator
from streams.simulation.world import World, WorldParams

__all__ = ["Behaviour", "LoopOptions", "Simulator", "World", "WorldParams"]
