"""Per-entity accumulators compiled from the feature catalog: update, encode, merge.

One :class:`EntityLayout` per entity turns the catalog's stored features into flat
accumulator slots of one msgspec struct (its :class:`Aggregate` type), so the per-event
work is a few attribute updates whatever the features:

* ``last_ts``, the newest event time (the ``LastEventTime`` feature, the record's ``ts``);
* one count ``c<i>`` per ``Count`` feature, incremented by its event types;
* two decayed counts ``d<2i>``, ``d<2i+1>`` (numerator, denominator) per ``DecayedRate``
  feature, decayed to the newest event time on each newer event (one ``exp`` per
  half-life); a late event (older than ``last_ts``) adds its weight decayed from its own
  time, ``2^(-(last_ts - ts) / half_life)``, not 1;
* one string ``x<i>`` per ``LatestContext`` feature, set by the newest event (by event
  time) that carries the context key;
* one ring of counts ``w<i>`` per ``WindowedCount`` feature, a slot per slice of the
  window (slot ``b % buckets`` for event-time slice ``b = ts // width``), with ``h<i>`` the
  newest slice counted; slices a newer event moves past are zeroed, and an event a window
  or more older than ``h<i>`` is not counted. Its value depends on when it is read
  (:meth:`EntityLayout.read_time_values`); the record holds it as of the entity's newest
  event.

So the result does not depend on the order events arrive in (up to float rounding, and
which of two events with the very same time is the newest): the processor's online
values and the point-in-time export's event-time rebuild (``streamlearn.offline.point_in_time``)
agree.

The feature record's ``values`` hold every stored feature plus the raw accumulators it
cannot be rebuilt without, under names starting with ``_`` (the decayed counts
``_<feature>_num`` / ``_<feature>_den``, a windowed count's slices ``_<feature>_<k>`` and
newest slice ``_<feature>_h``, and ``_last_ts`` when the entity declares no
``LastEventTime``), so the ``features`` topic is both what serving replicates and the
stores' changelog. Values are encoded through a msgspec struct built from the layout:
~30% faster than encoding a dict.

``update`` (twice per event) and ``encode`` (once per changed entity per commit) are the
hot path, so they are generated per layout as Python source, as ``dataclasses``
generates ``__init__``: constants inlined, no loops over slots. Written generically
(loops over slot lists) the feature processor's per-event work took ~1.8× as long
(measured against the hand-written aggregate this replaced).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from streamlearn.streams.catalog.features import (
    Count,
    DecayedRate,
    Feature,
    FeatureCatalog,
    LastEventTime,
    LatestContext,
    WindowedCount,
)
from streamlearn.streams.contracts import ActivityEvent, Scalar


class Aggregate(msgspec.Struct, gc=False):
    """The accumulators of one entity (or of one partition's partial of an item); each
    layout adds its slots in a subclass."""

    last_ts: float = 0.0


class _Record(msgspec.Struct):
    """Encodes exactly like ``streamlearn.streams.contracts.FeatureRecord``; ``values`` is a
    layout's values struct."""

    entity: str
    id: str
    values: Any
    ts: float


_ENCODE = msgspec.json.Encoder().encode
_PY_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


class _Slots(msgspec.Struct):
    """An aggregate's accumulators as lists, for the code that is not on the hot path."""

    last_ts: float
    counts: list[int]
    decayed: list[float]
    context: list[str]
    #: per windowed count: its ring of slice counts and its newest slice
    windows: list[list[int]]
    heads: list[int]


def _advance(ring: list[int], head: int, to: int) -> None:
    """Zero the slots of the slices after ``head`` up to ``to`` (the ring moves on)."""
    n = len(ring)
    if to - head >= n:
        ring[:] = [0] * n
    else:
        for b in range(head + 1, to + 1):
            ring[b % n] = 0


def window_count(ring: list[int], head: int, at: int) -> int:
    """Events in the window that ends with slice ``at``: the slices ``(at - n, at]``."""
    n = len(ring)
    if at - head >= n:
        return 0
    return sum(c for k, c in enumerate(ring) if head - ((head - k) % n) > at - n)


class EntityLayout:
    """The accumulator layout of one entity's stored features (see the module docstring)."""

    def __init__(self, catalog: FeatureCatalog, entity: str) -> None:
        self.entity = entity
        stored = catalog.stored(entity)
        self.counts = [(f, a) for f in stored if isinstance(a := f.aggregation, Count)]
        self.rates = [(f, a) for f in stored if isinstance(a := f.aggregation, DecayedRate)]
        self.contexts = [(f, a) for f in stored if isinstance(a := f.aggregation, LatestContext)]
        self.windows = [(f, a) for f in stored if isinstance(a := f.aggregation, WindowedCount)]
        last = [f for f in stored if isinstance(f.aggregation, LastEventTime)]
        self.last_event: Feature | None = last[0] if last else None
        #: Where a record's values keep the newest event time.
        self.last_time_name = self.last_event.name if self.last_event else "_last_ts"

        #: Event type → (count slots, decayed slots) it increments.
        self.actions: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self.schema = catalog.schema
        for t in self.schema.types:
            counts = tuple(i for i, (_, c) in enumerate(self.counts) if t in c.types)
            decayed = tuple(
                2 * i + j
                for i, (_, r) in enumerate(self.rates)
                for j, types in enumerate((r.numerator, r.denominator))
                if t in types
            )
            self.actions[t] = (counts, decayed)
        #: Event type → the windowed counts it increments.
        self.window_actions = {
            t: tuple(i for i, (_, w) in enumerate(self.windows) if t in w.types)
            for t in self.schema.types
        }
        groups: dict[float, list[int]] = {}
        for i, (_, r) in enumerate(self.rates):
            groups.setdefault(math.log(2) / r.half_life_s, []).extend((2 * i, 2 * i + 1))
        #: (decay rate per second, decayed slots) per half-life.
        self.decay_groups = tuple((rate, tuple(slots)) for rate, slots in groups.items())

        n_c, n_d, n_x = len(self.counts), 2 * len(self.rates), len(self.contexts)
        n_w = len(self.windows)
        self._aggregate: Callable[..., Aggregate] = msgspec.defstruct(  # type: ignore[assignment]
            f"{entity.title()}Aggregate",
            [(f"c{i}", int, 0) for i in range(n_c)]
            + [(f"d{i}", float, 0.0) for i in range(n_d)]
            + [(f"x{i}", str, "") for i in range(n_x)]
            + [
                (f"w{i}", list[int], msgspec.field(default_factory=_zeros(w.buckets)))
                for i, (_, w) in enumerate(self.windows)
            ]
            + [(f"h{i}", int, 0) for i in range(n_w)],
            bases=(Aggregate,),
            gc=False,
        )
        self._n = (n_c, n_d, n_x, n_w)

        # The record's values: wire name, type and the expression of each, in order.
        rate_terms = [
            (f"(a.d{2 * i} + {r.prior * r.strength!r}) / (a.d{2 * i + 1} + {r.strength!r})")
            for i, (_, r) in enumerate(self.rates)
        ]
        columns: list[tuple[str, type, str]] = [
            *((f.name, int, f"a.c{i}") for i, (f, _) in enumerate(self.counts)),
            *((f.name, float, term) for (f, _), term in zip(self.rates, rate_terms, strict=True)),
            (self.last_time_name, float, "a.last_ts"),
            *((f.name, str, f"a.x{i}") for i, (f, _) in enumerate(self.contexts)),
            *(
                (f.name, int, f"_window_count(a.w{i}, a.h{i}, int(a.last_ts // {w.width!r}))")
                for i, (f, w) in enumerate(self.windows)
            ),
            *(
                (f"_{f.name}_{part}", float, f"a.d{2 * i + j}")
                for i, (f, _) in enumerate(self.rates)
                for j, part in enumerate(("num", "den"))
            ),
            *((f"_{f.name}_h", int, f"a.h{i}") for i, (f, _) in enumerate(self.windows)),
            *(
                (f"_{f.name}_{k}", int, f"a.w{i}[{k}]")
                for i, (f, w) in enumerate(self.windows)
                for k in range(w.buckets)
            ),
        ]
        #: Wire names of a record's values, in encoding order.
        self.value_names = tuple(name for name, _, _ in columns)
        self._values_type = msgspec.defstruct(
            f"{entity.title()}Values",
            [(f"v{i}", t) for i, (_, t, _) in enumerate(columns)],
            rename={f"v{i}": name for i, (name, _, _) in enumerate(columns)},
            gc=False,
        )
        #: The generated source of :meth:`update` and :meth:`encode`.
        self.source = self._source([expr for _, _, expr in columns])
        namespace: dict[str, Any] = {
            "_exp": math.exp,
            "_Record": _Record,
            "_Values": self._values_type,
            "_encode": _ENCODE,
            "_entity": entity,
            "_advance": _advance,
            "_window_count": window_count,
        }
        exec(compile(self.source, f"<feature layout {entity}>", "exec"), namespace)
        #: ``update(aggregate, event)``: apply one event.
        self.update: Callable[[Aggregate, ActivityEvent], None] = namespace["update"]
        #: ``encode(entity_id, aggregate)``: the feature record (``FeatureRecord`` JSON).
        self.encode: Callable[[str, Aggregate], bytes] = namespace["encode"]
        self._row: Callable[[Aggregate], tuple[Scalar, ...]] = namespace["row"]

    def _source(self, exprs: list[str]) -> str:
        """Python source of ``update(a, ev)``, ``encode(entity_id, a)`` and ``row(a)``."""
        group_of = {i: g for g, (_, slots) in enumerate(self.decay_groups) for i in slots}
        lines = [
            "def update(a, ev):",
            "    ts = ev.ts",
            "    last = a.last_ts",
            "    if ts >= last:",
            "        if ts > last:",
        ]
        if self.decay_groups:
            lines.append("            if last:")
            for rate, slots in self.decay_groups:
                lines.append(f"                f = _exp((last - ts) * {rate!r})")
                lines += [f"                a.d{i} *= f" for i in slots]
        lines.append("            a.last_ts = ts")
        lines += [f"        w{g} = 1.0" for g in range(len(self.decay_groups))]
        if self.contexts:  # the newest event's value (by event time)
            lines += ["        ctx = ev.context", "        if ctx:"]
            for i, (_, c) in enumerate(self.contexts):
                lines += [
                    f"            v = ctx.get({c.key!r})",
                    "            if v.__class__ is str:",
                    f"                a.x{i} = v",
                ]
        if self.decay_groups:  # a late event counts as decayed from its own time
            lines.append("    else:")
            lines += [
                f"        w{g} = _exp((ts - last) * {rate!r})"
                for g, (rate, _) in enumerate(self.decay_groups)
            ]
        # One branch per distinct action (the slots an event type increments); the
        # impressions' first, as impressions outnumber every other event type.
        branches: dict[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], list[str]] = {}
        impressions = self.schema.impressions
        for t in sorted(self.schema.types, key=lambda t: (t not in impressions, t)):
            action = (*self.actions[t], self.window_actions[t])
            if action != ((), (), ()):
                branches.setdefault(action, []).append(t)
        if branches:
            lines.append("    kind = ev.type")
        for n, ((counts, decayed, windows), types) in enumerate(branches.items()):
            # a set display after ``in`` compiles to a constant frozenset
            test = (
                f"== {types[0]!r}" if len(types) == 1 else f"in {{{', '.join(map(repr, types))}}}"
            )
            lines.append(f"    {'elif' if n else 'if'} kind {test}:")
            lines += [f"        a.c{i} += 1" for i in counts]
            lines += [f"        a.d{i} += w{group_of[i]}" for i in decayed]
            for i in windows:
                w = self.windows[i][1]
                lines += [
                    f"        b = int(ts // {w.width!r})",
                    f"        h = a.h{i}",
                    "        if b > h:",
                    f"            _advance(a.w{i}, h, b)",
                    f"            a.h{i} = b",
                    f"            a.w{i}[b % {w.buckets}] += 1",
                    f"        elif b > h - {w.buckets}:",
                    f"            a.w{i}[b % {w.buckets}] += 1",
                ]
        args = ", ".join(exprs)
        lines += [
            "",
            "def encode(entity_id, a):",
            f"    return _encode(_Record(_entity, entity_id, _Values({args}), a.last_ts))",
            "",
            "def row(a):",
            f"    return ({args},)",
        ]
        return "\n".join(lines) + "\n"

    def new(self) -> Aggregate:
        """Accumulators of an entity without events."""
        return self._aggregate()

    def values(self, a: Aggregate) -> dict[str, Scalar]:
        """The record's values as a dict (stored features and raw accumulators)."""
        return dict(zip(self.value_names, self._row(a), strict=True))

    def _slots(self, a: Aggregate) -> _Slots:
        t = msgspec.structs.astuple(a)
        n_c, n_d, n_x, n_w = self._n
        i = 1 + n_c + n_d + n_x
        return _Slots(
            t[0],
            list(t[1 : 1 + n_c]),
            list(t[1 + n_c : 1 + n_c + n_d]),
            list(t[1 + n_c + n_d : i]),
            [list(w) for w in t[i : i + n_w]],
            list(t[i + n_w :]),
        )

    def _make(self, s: _Slots) -> Aggregate:
        return self._aggregate(s.last_ts, *s.counts, *s.decayed, *s.context, *s.windows, *s.heads)

    def read_time_values(self, values: Mapping[str, Scalar], now: float) -> dict[str, int]:
        """The windowed counts of a record's ``values`` as of event time ``now``."""
        out: dict[str, int] = {}
        for f, w in self.windows:
            head = values.get(f"_{f.name}_h")
            if head is None:
                out[f.name] = int(values.get(f.name, 0))
                continue
            ring = [int(values.get(f"_{f.name}_{k}", 0)) for k in range(w.buckets)]
            out[f.name] = window_count(ring, int(head), int(now // w.width))
        return out

    def from_values(self, v: Mapping[str, Scalar], ts: float | None = None) -> Aggregate:
        """Accumulators back from a record's values (missing ones start empty).

        ``ts`` is the record's time, used when the values carry no last-event time.
        """
        last = v.get(self.last_time_name)
        return self._make(
            _Slots(
                float(last if last is not None else (ts or 0.0)),
                [int(v.get(f.name, 0)) for f, _ in self.counts],
                [
                    float(v.get(f"_{f.name}_{part}", 0.0))
                    for f, _ in self.rates
                    for part in ("num", "den")
                ],
                [str(v.get(f.name, "")) for f, _ in self.contexts],
                [
                    [int(v.get(f"_{f.name}_{k}", 0)) for k in range(w.buckets)]
                    for f, w in self.windows
                ],
                [int(v.get(f"_{f.name}_h", 0)) for f, _ in self.windows],
            )
        )

    def merge(self, parts: Sequence[Aggregate]) -> Aggregate:
        """One aggregate from partials: counts add; decayed counts are decayed to the
        newest partial's time, then added; windowed counts add per slice of event time
        (slices a window older than the newest are dropped); the newest time is kept, and
        each context value comes from the newest partial that has one."""
        n_c, n_d, n_x, _ = self._n
        newest = max((p.last_ts for p in parts), default=0.0)
        partials = [self._slots(p) for p in parts]
        heads = [max((s.heads[i] for s in partials), default=0) for i in range(len(self.windows))]
        out = _Slots(
            newest,
            [0] * n_c,
            [0.0] * n_d,
            [""] * n_x,
            [[0] * w.buckets for _, w in self.windows],
            heads,
        )
        ctx_ts = [-math.inf] * n_x
        for p in partials:
            for i, ring in enumerate(p.windows):
                n, head = len(ring), p.heads[i]
                for k, c in enumerate(ring):
                    b = head - ((head - k) % n)
                    if c and b > heads[i] - n:
                        out.windows[i][b % n] += c
            for i, n in enumerate(p.counts):
                out.counts[i] += n
            for rate, slots in self.decay_groups:
                factor = math.exp(-(newest - p.last_ts) * rate)
                for i in slots:
                    out.decayed[i] += p.decayed[i] * factor
            for i, value in enumerate(p.context):
                if value and p.last_ts >= ctx_ts[i]:
                    out.context[i], ctx_ts[i] = value, p.last_ts
        return self._make(out)


def _zeros(n: int) -> Callable[[], list[int]]:
    return lambda: [0] * n


_LAYOUTS: dict[tuple[FeatureCatalog, str], EntityLayout] = {}


def layout(catalog: FeatureCatalog, entity: str) -> EntityLayout:
    """The (cached) layout of ``entity`` in ``catalog``."""
    key = (catalog, entity)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _LAYOUTS[key] = EntityLayout(catalog, entity)
    return lay
