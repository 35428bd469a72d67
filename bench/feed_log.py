"""A feed training log shaped like the one a running loop writes, without running the loop.

``feed_examples(n)`` drives the simulator's session traffic (:class:`Traffic`, the feed
surface, random ranking) in virtual time and turns each shown item into the
``TrainingExample`` the joiner would emit for it: the raw features exactly as serving
would score them (``served_features(…).row``: ids, surface, the user's and the item's counts,
rates and recencies from the feature store's own aggregates, updated with every
impression and engagement as the feature processor would), the label (an engagement of
the ``feed`` head), the served version and score. Used by ``bench_trainer.py`` and
``bench_ranks.py``; cached on disk (one JSON record a line) because building 335k takes
about a minute.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from streamlearn.project import load_project
from streamlearn.simulator import World
from streamlearn.simulator.inprocess import POSITIVES
from streamlearn.simulator.surfaces import default_surfaces
from streamlearn.simulator.traffic import Traffic
from streamlearn.streams.contracts import ActivityEvent, TrainingExample, encode
from streamlearn.streams.features.aggregates import Aggregate, layout
from streamlearn.streams.features.store import served_features

#: The built-in example project, whose ``feed`` model the log trains.
CATALOG = load_project().catalog

#: Epoch of the virtual time (so timestamps look like a real log's).
T0 = 1_780_000_000.0


def _event(type_: str, user: str, item: str, category: str, ts: float) -> ActivityEvent:
    return ActivityEvent(
        event_id="",
        type=type_,
        ts=ts,
        user_id=user,
        item_id=item,
        surface="feed",
        request_id="",
        context={"category": category},
    )


def feed_examples(n: int, seed: int = 0, rate: float = 400.0) -> list[bytes]:
    """``n`` encoded ``TrainingExample`` records of the ``feed`` model (module docstring)."""
    world = World(seed=seed)
    traffic = Traffic(world, default_surfaces(world), rate, "log", ads_fraction=0.0)
    users, items = layout(CATALOG, "user"), layout(CATALOG, "item")
    user_agg: dict[str, Aggregate] = {}
    item_agg: dict[str, Aggregate] = {}
    positives = POSITIVES["feed"]
    row = served_features(CATALOG).row
    out: list[bytes] = []
    while len(out) < n:
        planned = traffic.plan()
        now = T0 + planned.t
        req = planned.request
        u = user_agg.get(req.user_id)
        u_values = users.values(u) if u is not None else None
        outcome = traffic.show(planned, None)
        engaged = {s.item_id: d for d, t, s in outcome.engagements if t in positives}
        for s in outcome.shown:
            it = item_agg.get(s.item_id)
            x = row(req, s.item_id, u_values, items.values(it) if it is not None else None, now)
            label = int(s.item_id in engaged)
            out.append(
                encode(
                    TrainingExample(
                        request_id=req.request_id,
                        user_id=req.user_id,
                        item_id=s.item_id,
                        surface="feed",
                        ts=now,
                        label=label,  # type: ignore[arg-type]
                        features=x,
                        served_version=1,
                        served_score=0.05,
                        label_ts=now + engaged[s.item_id] if label else None,
                    )
                )
            )
        for s in outcome.shown:
            events = [_event("impression", s.user_id, s.item_id, s.category, now)]
            events += [
                _event(t, s.user_id, s.item_id, s.category, now + d)
                for d, t, e in outcome.engagements
                if e is s
            ]
            for ev in events:
                users.update(user_agg.setdefault(ev.user_id, users.new()), ev)
                items.update(item_agg.setdefault(ev.item_id, items.new()), ev)
    return out[:n]


def cached_feed_examples(n: int, cache: Path, seed: int = 0) -> list[bytes]:
    """:func:`feed_examples`, read from ``cache`` when it holds ``n`` records of ``seed``
    made by this version of the code (the simulator's and this module's)."""
    import streamlearn.simulator as simulator

    code = b"".join(p.read_bytes() for p in sorted(Path(simulator.__file__).parent.glob("*.py")))
    tag = hashlib.sha256(code + Path(__file__).read_bytes()).hexdigest()[:10]
    path = cache / f"feed-{n}-{seed}-{tag}.jsonl"
    if path.exists():
        return path.read_bytes().splitlines()
    t0 = time.perf_counter()
    out = feed_examples(n, seed)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(out))
    tmp.rename(path)
    print(f"built {n:,} feed examples in {time.perf_counter() - t0:.1f} s ({path})")
    return out
