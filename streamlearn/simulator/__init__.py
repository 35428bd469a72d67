"""The synthetic world that drives the whole online-learning loop (``streamlearn simulate``).

The simulator drives the built-in example project only (``examples/feed_ads``, see
:mod:`streamlearn.simulator.example`): its worlds and behaviour are written for that
project's events, surfaces and models. It is a client of the platform: it asks serving for
rankings over HTTP and
publishes activity events like any producer, so it sits beside ``serving`` and
``offline`` and imports only ``streams`` (contracts, Kafka plumbing) and ``models``.

Modules: ``world`` (users and the feed's hidden truth), ``catalog`` (items: Zipf-like
popularity, churn), ``ads`` (the ads surface's own click model), ``surfaces`` (feed and
ads: truth, behaviour, how many ranked and shown), ``sessions`` (when users come and how
long they stay), ``behaviour`` (engagements and their delays), ``traffic`` (requests and
outcomes without I/O), ``ranking`` (expected CTR of a ranking), ``events`` (what is
published), ``scoring`` (the HTTP client of serving, over replicas), ``stats``,
``metrics`` and ``shape`` (what is counted and measured), ``loop`` (the
:class:`Simulator`).

>>> world = World(seed=7)                                     # doctest: +SKIP
>>> sim = Simulator(world, kafka, Topics(kafka.topic_prefix), "http://127.0.0.1:8080")
>>> sim.run(max_seconds=120)["ctr_model_expected"]            # doctest: +SKIP
"""

from __future__ import annotations

from streamlearn.simulator.ads import AdsParams, AdsWorld
from streamlearn.simulator.behaviour import Behaviour
from streamlearn.simulator.loop import LoopOptions, Simulator
from streamlearn.simulator.sessions import SessionParams
from streamlearn.simulator.surfaces import Surface, default_surfaces
from streamlearn.simulator.world import World, WorldParams

__all__ = [
    "AdsParams",
    "AdsWorld",
    "Behaviour",
    "LoopOptions",
    "SessionParams",
    "Simulator",
    "Surface",
    "World",
    "WorldParams",
    "default_surfaces",
]
