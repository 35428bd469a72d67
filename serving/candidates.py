"""A request's candidates → a model's ``(idx, val)`` arrays and their feature-log rows.

A model row (:class:`~streamlearn.streams.features.store.ServedFeatures`) is made of
parts: the *request*'s (``surface``, the context), the *user*'s (``user_id`` and its
stored features), the user's request-time features, the *item*'s (``item_id`` and its
stored features) and the item's request-time features. Featurising every row value by
value costs a hundred times the model's own run; :class:`CandidateFeaturiser` (one per
feature spec) instead encodes each part once and assembles the candidates' arrays with a
few numpy operations:

* an entity's slots and its feature-log JSON are encoded when first needed and kept
  until its features change — the feature source returns a new mapping then, and a part
  is kept only with the very mapping it was encoded from (:class:`FeatureSource`);
  a request's part is kept per surface and context;
* items' slots are gathered from a table in one step, the request's and the user's are
  broadcast, request-time numbers (``SecondsSince``) are computed as arrays at ``now``;
* a cross of a user (or request) field with an item field is hashed per candidate.

The arrays are those ``Featuriser.transform_many`` gives for the rows, bit for bit, and
the logged features are the rows (``tests/unit/serving/test_candidates.py`` checks
both); a spec that takes a request-time feature as a category or in a cross is
featurised row by row.

The feature log is encoded here once: each item's features are joined from the parts'
JSON, and its items from those (:func:`logged_items`, ``msgspec.Raw``), so
:class:`FeatureLog` encodes (when the sink produces it) to the same JSON as the contract's
``FeatureLogRecord``, which is what readers decode it with.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from operator import attrgetter, is_
from typing import Any, Final, Protocol

import msgspec
import numba
import numpy as np

from streamlearn.models.features import Featuriser, slot_key
from streamlearn.streams.contracts import PredictionRequest, Scalar
from streamlearn.streams.features.store import ServedFeatures

#: Entities whose parts are kept per featuriser; the cache is emptied when full.
MAX_USERS: Final = 1 << 16
#: Items whose slots the table holds; it starts again, empty, when full.
MAX_ITEMS: Final = 1 << 14
#: Distinct (surface, context) parts kept.
MAX_REQUEST_PARTS: Final = 1 << 12

_ENCODER: Final = msgspec.json.Encoder()
# Which part of a row a key comes from, in the order a row is built (a later part's key
# replaces an earlier one's).
_REQUEST, _USER, _USER_SINCE, _ITEM, _ITEM_SINCE = range(5)


class FeatureSource(Protocol):
    """Where the service reads the current features of users and items.

    An implementation returns the same mapping object for an entity as long as its
    features have not changed, and a new one when they do (a mapping once returned is
    never changed): what is derived from an entity's features is kept by the mapping's
    identity. One returning a new mapping every time is correct, only slower.
    """

    def user(self, user_id: str) -> Mapping[str, Scalar] | None:
        """The user's stored features, or ``None`` when unknown."""
        ...

    def item(self, item_id: str) -> Mapping[str, Scalar] | None:
        """The item's stored features, or ``None`` when unknown."""
        ...

    def items(self, item_ids: Sequence[str]) -> Sequence[Mapping[str, Scalar] | None]:
        """The stored features of each item, in order (``None`` where unknown)."""
        ...

    def stored(self, entity: str, entity_id: str) -> Mapping[str, Scalar] | None:
        """Any entity's stored features, or ``None`` when unknown."""
        ...


class _Record(msgspec.Struct, frozen=True):
    """The contract's ``FeatureLogRecord`` (same fields, same order) with its items
    already encoded."""

    request_id: str
    user_id: str
    surface: str
    ts: float
    model: str
    version: int
    items: msgspec.Raw
    shadow_version: int | None = None


class FeatureLog:
    """The feature-log record of one request: what was scored, encoded by
    :meth:`encode` (by the sink, once, when it produces the record) to the JSON of the
    contract's ``FeatureLogRecord``; decode it as one to read it."""

    __slots__ = (
        "candidates",
        "model",
        "request_id",
        "scores",
        "shadow_scores",
        "shadow_version",
        "surface",
        "ts",
        "user_id",
        "version",
    )

    def __init__(
        self,
        request_id: str,
        user_id: str,
        surface: str,
        ts: float,
        model: str,
        version: int,
        candidates: Candidates,
        scores: list[float],
        shadow_scores: list[float] | None = None,
        shadow_version: int | None = None,
    ) -> None:
        self.request_id = request_id
        self.user_id = user_id
        self.surface = surface
        self.ts = ts
        self.model = model
        self.version = version
        self.candidates = candidates
        self.scores = scores
        self.shadow_scores = shadow_scores
        self.shadow_version = shadow_version

    def encode(self) -> bytes:
        """The record as the feature log's JSON."""
        items = logged_items(self.candidates, self.scores, self.shadow_scores)
        return _ENCODER.encode(
            _Record(
                self.request_id,
                self.user_id,
                self.surface,
                self.ts,
                self.model,
                self.version,
                items,
                self.shadow_version,
            )
        )


class Candidates(msgspec.Struct, frozen=True):
    """One request's candidates featurised: the arrays, and what to log per candidate.

    Candidate ``k``'s row as JSON is ``head + items[k] + tail + tails[k] + b"}"``
    (:attr:`features` joins them; :func:`logged_items` writes them without joining them
    first).
    """

    idx: np.ndarray
    val: np.ndarray
    #: Each candidate's id as JSON (a string), in the order of the candidates.
    ids: list[bytes]
    head: bytes
    items: list[bytes]
    tail: bytes = b""
    tails: list[bytes] | None = None

    @property
    def features(self) -> list[bytes]:
        """Each candidate's row as JSON (an object), in the order of the candidates."""
        tails = self.tails or [b""] * len(self.items)
        return [
            self.head + i + self.tail + t + b"}" for i, t in zip(self.items, tails, strict=True)
        ]


def logged_items(
    got: Candidates, scores: list[float], shadow_scores: list[float] | None = None
) -> msgspec.Raw:
    """The ``items`` of a feature-log record (``ServedItem``s: id, features, score,
    shadow score) as one JSON array, from the candidates' encoded ids and rows."""
    score = _ENCODER.encode(scores)[1:-1].split(b",")
    n = len(score)
    shadow = (
        [b"null"] * n if shadow_scores is None else _ENCODER.encode(shadow_scores)[1:-1].split(b",")
    )
    head, tail, join = got.head, got.tail, b"".join
    tails = got.tails or [b""] * n
    return msgspec.Raw(
        b"["
        + b",".join(
            [
                join(
                    (
                        b'{"item_id":',
                        i,
                        b',"features":',
                        head,
                        f,
                        tail,
                        t,
                        b'},"score":',
                        s,
                        b',"shadow_score":',
                        h,
                        b"}",
                    )
                )
                for i, f, t, s, h in zip(got.ids, got.items, tails, score, shadow, strict=True)
            ]
        )
        + b"]"
    )


@numba.njit(cache=True, inline="always")
def _age(now: float, last: float) -> float:
    """``seconds_since``: to the millisecond, -1.0 without a time (NaN)."""
    if last != last:
        return -1.0
    return np.rint((now - last) * 1000.0) / 1000.0


#: How a numeric slot's value is transformed, as the assembly kernel is told.
_TRANSFORMS: Final = {"identity": 0, "log1p": 1}
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


def warm_up() -> None:
    """Compile (or load from its cache) the assembly kernel now, not on a request."""
    one, i, f = np.zeros((1, 1)), np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32)
    rows, none = np.zeros(1, np.intp), np.zeros(0, np.intp)
    _assemble(
        i, f, one, rows, none, i[0, :0], f[0, :0], one[0], 0.0, none, none, -1,
        i.copy(), f.copy(), one.copy(),
    )  # fmt: skip
    _transform(np.zeros(1), 1, np.zeros(1))


@numba.njit(cache=True, inline="always")
def _numeric(x: float, transform: int) -> float:
    """A numeric slot's value (``Featuriser.numeric`` for one finite value)."""
    if transform == 1:
        x = np.sign(x) * np.log1p(np.abs(x))
    return min(max(x, -_FLOAT32_MAX), _FLOAT32_MAX)


@numba.njit(cache=True, nogil=True)
def _transform(values: np.ndarray, transform: int, out: np.ndarray) -> None:
    for k in range(values.shape[0]):
        out[k] = _numeric(values[k], transform)


def _kernel_transforms_alike(featuriser: Featuriser) -> bool:
    """Whether the kernel's numeric transform gives the featuriser's values to the bit
    here (its ``log1p`` is the C library's; numpy's may be its own), on ages as requests
    give them: -1, 0, milliseconds to years."""
    rng = np.random.default_rng(0)
    ages = np.concatenate(([-1.0, 0.0, 0.001], np.rint(rng.exponential(5e4, 5000)) / 1000))
    ours = np.empty_like(ages)
    _transform(ages, _TRANSFORMS[featuriser.spec.numeric_transform], ours)
    want = featuriser.numeric(ages).astype(np.float32)
    return bool(np.array_equal(ours.astype(np.float32), want))


@numba.njit(cache=True, nogil=True)
def _assemble(
    table_idx: np.ndarray,
    table_val: np.ndarray,
    table_last: np.ndarray,
    rows: np.ndarray,
    slots: np.ndarray,
    const_idx: np.ndarray,
    const_val: np.ndarray,
    user_last: np.ndarray,
    now: float,
    since_slots: np.ndarray,
    since_cols: np.ndarray,
    transform: int,
    idx: np.ndarray,
    val: np.ndarray,
    ages: np.ndarray,
) -> None:
    """The items' rows of the table into ``idx``/``val``, the request's and user's
    ``slots`` over them, and every candidate's request-time ages (the user's, then the
    item's) into ``ages``; with ``transform`` >= 0, their values into the ``since_slots``
    too: what some twenty numpy calls would do, in one."""
    nu = user_last.shape[0]
    for r in range(rows.shape[0]):
        row = rows[r]
        idx[r] = table_idx[row]
        val[r] = table_val[row]
        for j in range(slots.shape[0]):
            idx[r, slots[j]] = const_idx[j]
            val[r, slots[j]] = const_val[j]
        for j in range(nu):
            ages[r, j] = _age(now, user_last[j])
        for j in range(table_last.shape[1]):
            ages[r, nu + j] = _age(now, table_last[row, j])
        if transform >= 0:
            for j in range(since_slots.shape[0]):
                val[r, since_slots[j]] = _numeric(ages[r, since_cols[j]], transform)


_NO_TIMES = np.zeros(0)


class _Part:
    """The slots and JSON of one part of a row, from the mapping they came from."""

    __slots__ = ("const", "cross", "id", "idx", "json", "last", "row", "segments", "val", "values")

    def __init__(
        self,
        values: object,
        idx: np.ndarray,
        val: np.ndarray,
        json: bytes,
        cross: dict[str, tuple[str, bool]],
        last: np.ndarray = _NO_TIMES,
        row: int = -1,
        segments: tuple[str, ...] = (),
        id_json: bytes = b"",
    ) -> None:
        self.values = values  # the source's mapping: the part is valid while it is returned
        self.idx = idx  # the part's slots
        self.val = val
        self.json = json  # its keys as JSON object members (an item's: after a comma)
        self.cross = cross  # per field in a cross with another part: (slot key, present)
        self.last = last  # its request-time features' sources (NaN: none)
        self.id = id_json  # an item's id as JSON
        self.row = row  # an item's row in the table
        self.segments = segments  # an item's keys in each cross with other parts
        self.const: dict[_Part, _Const] = {}  # a user's: its slots with each request part's


class _Const:
    """What is the same for every candidate of a request: the request's and the user's
    slots (and their crosses), JSON, and their keys around an item's in the crosses."""

    __slots__ = ("idx", "json", "prefix", "present", "suffix", "val")

    def __init__(self, idx: np.ndarray, val: np.ndarray, json: bytes) -> None:
        self.idx = idx
        self.val = val
        self.json = json
        self.prefix: list[str] = []
        self.suffix: list[str] = []
        self.present: list[bool] = []


class _Table:
    """Items' full rows (other parts' slots as in an empty row; a cross with another
    part's field holds whether the item's fields are present); replaced by an empty one
    when full, never changed where a reader may look."""

    def __init__(self, base: tuple[np.ndarray, np.ndarray], n_since: int, capacity: int) -> None:
        self.idx = np.tile(base[0], (capacity, 1))
        self.val = np.tile(base[1], (capacity, 1))
        self.last = np.full((capacity, n_since), np.nan)
        self.parts: dict[str, _Part] = {}
        self.used = 0


_NONE = _Part(object(), np.zeros(0), np.zeros(0), b"", {})  # no part: never valid
_VALUES = attrgetter("values")
_ROW = attrgetter("row")


def _members(values: Mapping[str, Scalar]) -> bytes:
    """``values`` as JSON object members, without the braces (empty: ``b""``)."""
    return _ENCODER.encode(values)[1:-1] if values else b""


def _last(value: Scalar | None) -> float:
    """A ``SecondsSince`` source as a float, NaN when missing or 0 (as ``seconds_since``)."""
    return float(value) if value else float("nan")


class CandidateFeaturiser:
    """Featurises requests' candidates by ``featuriser``'s spec over ``served``'s rows
    (see the module docstring). Safe to call from several threads."""

    def __init__(
        self, featuriser: Featuriser, served: ServedFeatures, max_items: int = MAX_ITEMS
    ) -> None:
        self.featuriser = featuriser
        self.served = served
        spec = featuriser.spec
        self.width = spec.n_slots
        names = {
            _USER_SINCE: [n for n, _ in served.since["user"]],
            _ITEM_SINCE: [n for n, _ in served.since["item"]],
        }
        # the part each row key comes from: the last one to write it (context keys aside)
        owner: dict[str, int] = {"user_id": _USER, "item_id": _ITEM, "surface": _REQUEST}
        for part, keys in (
            (_USER, list(served.defaults["user"])),
            (_USER_SINCE, names[_USER_SINCE]),
            (_ITEM, list(served.defaults["item"])),
            (_ITEM_SINCE, names[_ITEM_SINCE]),
        ):
            owner.update(dict.fromkeys(keys, part))
        self._owner = owner
        self._entity = {  # entity -> (its part, the stored keys it writes last)
            "user": (_USER, [k for k in served.defaults["user"] if owner[k] == _USER]),
            "item": (_ITEM, [k for k in served.defaults["item"] if owner[k] == _ITEM]),
        }
        # request-time features a row ends with: positions among each entity's sources
        self._since = {p: [i for i, n in enumerate(names[p]) if owner[n] == p] for p in names}
        since_names = [names[p][i] for p in names for i in self._since[p]]  # user's, item's
        self._user_since_keys = [
            _ENCODER.encode(n) + b":" for n in since_names[: len(self._since[_USER_SINCE])]
        ]
        self._item_since_keys = [
            b"," + _ENCODER.encode(n) + b":" for n in since_names[len(self._user_since_keys) :]
        ]

        def part_of(f: str) -> int:  # a field no part writes is never there: the request's
            return owner.get(f, _REQUEST)

        slots: dict[int, list[int]] = {p: [] for p in range(5)}
        since_slots: list[tuple[int, int]] = []  # (slot, column among since_names)
        crosses: list[tuple[int, list[tuple[str, int]]]] = []
        # a request-time feature as a category or in a cross, a cross with another
        # part's field between two of the item's, an entity other than the user and the
        # item, or a windowed count: row by row
        self.rowwise = not served.simple
        slot = 1
        for f in spec.categorical:
            self.rowwise |= part_of(f) in names
            slots[part_of(f)].append(slot)
            slot += 1
        for f in spec.numeric:
            if part_of(f) in names:
                since_slots.append((slot, since_names.index(f)))
            else:
                slots[part_of(f)].append(slot)
            slot += 1
        for cross in spec.crosses:
            parts = {part_of(f) for f in cross}
            if parts & set(names):
                self.rowwise = True
            elif len(parts) == 1:
                slots[parts.pop()].append(slot)
            else:
                at = [i for i, f in enumerate(cross) if part_of(f) == _ITEM]
                self.rowwise |= bool(at) and at != list(range(at[0], at[-1] + 1))
                crosses.append((slot, [(f, part_of(f)) for f in cross]))
            slot += 1
        self._slots = {p: np.asarray(s, np.intp) for p, s in slots.items()}
        # crosses of the request's and the user's fields are constant too
        self._const_crosses = [c for c in crosses if all(p != _ITEM for _, p in c[1])]
        self._item_crosses = [c for c in crosses if any(p == _ITEM for _, p in c[1])]
        self._const_slots = np.asarray(
            [*slots[_REQUEST], *slots[_USER], *(s for s, _ in self._const_crosses)], np.intp
        )
        self._since_slots = np.asarray([s for s, _ in since_slots], np.intp)
        self._since_cols = np.asarray([c for _, c in since_slots], np.intp)
        self._cross_fields = {
            p: sorted({f for _, fs in crosses for f, q in fs if q == p})
            for p in (_REQUEST, _USER, _ITEM)
        }
        empty = featuriser.transform_many([{}])
        self._base = (empty[0][0], empty[1][0])
        self._users: dict[str, _Part] = {}
        self._requests: dict[tuple[Any, ...], _Part] = {}
        # per cross with an item's fields: the keys around the item's -> item's -> index
        self._crossed: list[dict[tuple[str, str], dict[str, int]]] = [
            {} for _ in self._item_crosses
        ]
        self._table = _Table(self._base, len(self._since[_ITEM_SINCE]), max_items)
        self._n_ages = len(self._since[_USER_SINCE]) + len(self._since[_ITEM_SINCE])
        self._lock = threading.Lock()
        warm_up()
        #: the kernel transforms request-time numbers too, where it gives the same bits
        self._transform = (
            _TRANSFORMS[spec.numeric_transform] if _kernel_transforms_alike(featuriser) else -1
        )

    # -- parts ------------------------------------------------------------------------------
    def _cross_keys(self, part: int, row: Mapping[str, Scalar]) -> dict[str, tuple[str, bool]]:
        return {
            f: (slot_key(f, row.get(f)), row.get(f) is not None) for f in self._cross_fields[part]
        }

    def _part(
        self, part: int, values: object, row: dict[str, Scalar], last: np.ndarray = _NO_TIMES
    ) -> _Part:
        idx, val = self.featuriser.transform_many([row])
        slots = self._slots[part]
        cross = self._cross_keys(part, row)
        return _Part(values, idx[0, slots], val[0, slots], _members(row), cross, last)

    def _request_part(self, request: PredictionRequest) -> _Part:
        ctx = request.context
        key: tuple[Any, ...] = (request.surface,)
        if ctx:  # by type too: True, 1 and 1.0 are equal keys but different categories
            key += tuple((k, type(v), v) for k, v in ctx.items())
        got = self._requests.get(key)
        if got is None:
            row: dict[str, Scalar] = {}
            if self._owner["surface"] == _REQUEST:
                row["surface"] = request.surface
            for k, v in (ctx or {}).items():
                if self._owner.get("ctx_" + k, _REQUEST) == _REQUEST:
                    row["ctx_" + k] = v
            got = self._part(_REQUEST, None, row)
            if len(self._requests) >= MAX_REQUEST_PARTS:
                self._requests.clear()
            self._requests[key] = got
        return got

    def _row(
        self, entity: str, entity_id: str, stored: Mapping[str, Scalar] | None
    ) -> dict[str, Scalar]:
        """What ``entity``'s part writes into a row."""
        part, keys = self._entity[entity]
        id_key = entity + "_id"
        row: dict[str, Scalar] = {id_key: entity_id} if self._owner[id_key] == part else {}
        defaults = self.served.defaults[entity]
        if stored:
            for k in keys:
                row[k] = stored.get(k, defaults[k])
        else:
            for k in keys:
                row[k] = defaults[k]
        return row

    def _lasts(self, entity: str, part: int, stored: Mapping[str, Scalar] | None) -> np.ndarray:
        sources = self.served.since[entity]
        if not stored:
            return np.full(len(self._since[part]), np.nan)
        return np.asarray([_last(stored.get(sources[i][1])) for i in self._since[part]], float)

    def _user_part(self, user_id: str, stored: Mapping[str, Scalar] | None) -> _Part:
        got = self._users.get(user_id)
        if got is None or got.values is not stored:
            row = self._row("user", user_id, stored)
            got = self._part(_USER, stored, row, self._lasts("user", _USER_SINCE, stored))
            if len(self._users) >= MAX_USERS:
                self._users.clear()
            self._users[user_id] = got
        return got

    def _const(self, req: _Part, usr: _Part) -> _Const:
        """The slots, JSON and cross keys of a request part with a user part."""
        got = usr.const.get(req)
        if got is not None:
            return got
        by_part = {_REQUEST: req, _USER: usr}
        keys, present = [], []
        for _, fields in self._const_crosses:
            key = [by_part[p].cross[f] for f, p in fields]
            keys.append("^".join(k for k, _ in key))
            present.append(all(ok for _, ok in key))
        idx = np.concatenate((req.idx, usr.idx, self.featuriser.indices(keys)))
        val = np.concatenate((req.val, usr.val, np.asarray(present, np.float32)))
        got = _Const(idx, val, b",".join([j for j in (req.json, usr.json) if j]))
        for _, fields in self._item_crosses:
            at = [i for i, (_, p) in enumerate(fields) if p == _ITEM]
            before = [by_part[p].cross[f] for f, p in fields[: at[0]]]
            after = [by_part[p].cross[f] for f, p in fields[at[-1] + 1 :]]
            got.prefix.append("".join(k + "^" for k, _ in before))
            got.suffix.append("".join("^" + k for k, _ in after))
            got.present.append(all(ok for _, ok in before + after))
        if len(usr.const) >= 64:
            usr.const.clear()
        usr.const[req] = got
        return got

    def _segments(self, row: Mapping[str, Scalar]) -> tuple[tuple[str, ...], list[bool]]:
        """An item's keys in each cross with other parts (its fields there joined: they
        are contiguous, else the cross is featurised row by row), and whether all are
        present."""
        segments, present = [], []
        for _, fields in self._item_crosses:
            keys = [
                (slot_key(f, row.get(f)), row.get(f) is not None) for f, p in fields if p == _ITEM
            ]
            segments.append("^".join(k for k, _ in keys))
            present.append(all(ok for _, ok in keys))
        return tuple(segments), present

    def _item_parts(
        self, table: _Table, ids: Sequence[str], stored: Sequence[Mapping[str, Scalar] | None]
    ) -> list[_Part] | None:
        """The items' parts, the missing ones encoded in one batch into ``table``; ``None``
        when the table was replaced meanwhile (start again with the new one)."""
        known = table.parts
        got = [known.get(i, _NONE) for i in ids]
        if all(map(is_, map(_VALUES, got), stored)):  # all kept: the common case, in C
            return got
        missing = [k for k, (p, s) in enumerate(zip(got, stored, strict=True)) if p.values is not s]
        rows = [self._row("item", ids[k], stored[k]) for k in missing]
        idx, val = self.featuriser.transform_many(rows)
        slots = self._slots[_ITEM]
        crossed = [s for s, _ in self._item_crosses]
        with self._lock:
            if self._table is not table:
                return None
            if table.used + len(rows) > len(table.idx):
                self._table = _Table(self._base, table.last.shape[1], len(table.idx))
                return None
            first = table.used
            new = slice(first, first + len(rows))
            table.idx[new, slots] = idx[:, slots]
            table.val[new, slots] = val[:, slots]
            for j, (k, row) in enumerate(zip(missing, rows, strict=True)):
                last = self._lasts("item", _ITEM_SINCE, stored[k])
                table.last[first + j] = last
                segments, present = self._segments(row)
                table.val[first + j, crossed] = present
                json = _members(row)
                p = _Part(
                    stored[k],
                    idx[j, slots],
                    val[j, slots],
                    b"," + json if json else b"",
                    {},
                    last,
                    first + j,
                    segments,
                    _ENCODER.encode(ids[k]),
                )
                known[ids[k]] = got[k] = p
            table.used += len(rows)
        return got

    # -- featurise ---------------------------------------------------------------------------
    def featurise(
        self,
        request: PredictionRequest,
        user: Mapping[str, Scalar] | None,
        items: Sequence[Mapping[str, Scalar] | None],
        now: float,
        others: Mapping[str, Mapping[str, Scalar] | None] | None = None,
    ) -> Candidates:
        """The candidates of ``request`` featurised at ``now``, with ``user``'s stored
        features and each candidate's (``items``, in order); ``others``: the stored
        features of the request's other entities (see ``ServedFeatures.entity_ids``)."""
        n = len(request.candidates)
        if self.rowwise or not n:
            return self._rowwise(request, user, items, now, others)
        for _ in range(3):
            table = self._table
            parts = self._item_parts(table, request.candidates, items)
            if parts is not None:
                break
        else:  # the table keeps filling up under us
            return self._rowwise(request, user, items, now)
        rows = np.fromiter(map(_ROW, parts), np.intp, n)
        usr = self._user_part(request.user_id, user)
        const = self._const(self._request_part(request), usr)
        idx = np.empty((n, self.width), np.int64)
        val = np.empty((n, self.width), np.float32)
        ages = np.empty((n, self._n_ages))
        _assemble(
            table.idx,
            table.val,
            table.last,
            rows,
            self._const_slots,
            const.idx,
            const.val,
            usr.last,
            now,
            self._since_slots,
            self._since_cols,
            self._transform,
            idx,
            val,
            ages,
        )
        head = b"{" + const.json
        tail, tails = b"", None
        if self._n_ages:  # request-time features: the user's, then the items'
            if self._transform < 0:
                val[:, self._since_slots] = self.featuriser.numeric(ages)[:, self._since_cols]
            nu = len(usr.last)
            if nu:
                user_ages = _ENCODER.encode(ages[0, :nu].tolist())[1:-1].split(b",")
                members = b",".join(
                    [k + v for k, v in zip(self._user_since_keys, user_ages, strict=True)]
                )
                head += b"," + members if len(head) > 1 else members
            keys = self._item_since_keys
            if len(keys) == 1:
                tail, tails = keys[0], _ENCODER.encode(ages[:, nu].tolist())[1:-1].split(b",")
            elif keys:
                columns = [_ENCODER.encode(c)[1:-1].split(b",") for c in ages[:, nu:].T.tolist()]
                tails = [
                    b"".join(t)
                    for t in zip(
                        *([k + v for v in c] for k, c in zip(keys, columns, strict=True)),
                        strict=True,
                    )
                ]
        for j, (slot, _) in enumerate(self._item_crosses):
            idx[:, slot] = self._cross_indices(j, const, parts)
            if not const.present[j]:
                val[:, slot] = 0.0
        own = [p.json for p in parts]
        if len(head) == 1:  # nothing constant: a row starts with the item's JSON, or a tail
            if own[0]:
                own = [j[1:] for j in own]
            elif tail:
                tail = tail[1:]
            elif tails:
                tails = [t[1:] for t in tails]
        return Candidates(idx, val, [p.id for p in parts], head, own, tail, tails)

    def _cross_indices(self, j: int, const: _Const, parts: list[_Part]) -> list[int]:
        """The indices of the ``j``-th cross with an item's fields, per candidate: kept by
        the keys around the item's (a user id, say) and then by the item's."""
        around = (const.prefix[j], const.suffix[j])
        known = self._crossed[j].get(around)
        if known is None:
            if len(self._crossed[j]) >= MAX_USERS:
                self._crossed[j].clear()
            known = self._crossed[j][around] = {}
        segments = [p.segments[j] for p in parts]
        got = [known.get(s) for s in segments]
        if None in got:
            prefix, suffix = around
            new = sorted({s for s, i in zip(segments, got, strict=True) if i is None})
            if len(known) + len(new) > MAX_REQUEST_PARTS:
                known.clear()
            known.update(
                zip(
                    new,
                    self.featuriser.indices([prefix + s + suffix for s in new]).tolist(),
                    strict=True,
                )
            )
            got = [known[s] for s in segments]
        return got  # type: ignore[return-value]

    def _rowwise(
        self,
        request: PredictionRequest,
        user: Mapping[str, Scalar] | None,
        items: Sequence[Mapping[str, Scalar] | None],
        now: float,
        others: Mapping[str, Mapping[str, Scalar] | None] | None = None,
    ) -> Candidates:
        row = self.served.row
        rows = [
            row(request, c, user, i, now, others)
            for c, i in zip(request.candidates, items, strict=True)
        ]
        idx, val = self.featuriser.transform_many(rows)
        ids = [_ENCODER.encode(c) for c in request.candidates]
        return Candidates(idx, val, ids, b"", [_ENCODER.encode(r)[:-1] for r in rows])
