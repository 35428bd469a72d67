"""The synthetic world that drives the whole online-learning loop (``streamlearn simulate``).

The simulator is a client of the platform: it asks serving for rankings over HTTP and
publishes activity events like any producer, so it sits beside ``serving`` and
``offline`` and imports only ``streams`` (contracts, Kafka plumbing) and ``models``.

Modules: ``world`` (the hidden truth), ``behaviour`` (engagements and their delays),
``ranking`` (expected CTR of a ranking), ``events`` (what is published), ``scoring``
(the HTTP client of serving), ``stats`` and ``metrics`` (what is counted), ``loop``
(the :class:`Simulator`).

>>> world = World(seed=7)                                     # doctest: +SKIP
>>> sim = Simulator(world, kafka, Topics(kafka.topic_prefix), "http://127.0.0.1:8080")
>>> sim.run(max_seconds=120)["ctr_model_expected"]            # doctest: +SKIP
"""

from __future__ import annotations

from simulator.behaviour import Behaviour
from simulator.loop import LoopOptions, Simulator
from simulator.world import World, WorldParams

__all__ = ["Behaviour", "LoopOptions", "Simulator", "World", "WorldParams"]
