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
JSON (:class:`LoggedItem`, ``msgspec.Raw``), so :class:`FeatureLog` encodes to the same
JSON as the contract's ``FeatureLogRecord``, which is what readers decode it with.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec
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

    def stored(self, entity: str, entity_id: str) -> Mapping[str, Scalar] | None:
        """Any entity's stored features, or ``None`` when unknown."""
        ...


class LoggedItem(msgspec.Struct, frozen=True, gc=False):
    """``ServedItem`` with its features already encoded (the same JSON)."""

    item_id: str
    features: msgspec.Raw
    score: float
    shadow_score: float | None = None


class FeatureLog(msgspec.Struct, frozen=True):
    """The feature-log record of one request, encoding to the JSON of the contract's
    ``FeatureLogRecord`` (same fields, same order); decode it as one to read it."""

    request_id: str
    user_id: str
    surface: str
    ts: float
    model: str
    version: int
    items: list[LoggedItem]
    shadow_version: int | None = None


@dataclass(frozen=True)
class Candidates:
    """One request's candidates featurised: the arrays, and what to log per candidate."""

    idx: np.ndarray
    val: np.ndarray
    #: Each candidate's row as JSON (an object), in the order of the candidates.
    features: list[bytes]


class _Part:
    """The slots and JSON of one part of a row, from the mapping they came from."""

    __slots__ = ("const", "cross", "idx", "json", "last", "row", "segments", "val", "values")

    def __init__(
        self,
        values: object,
        idx: np.ndarray,
        val: np.ndarray,
        json: bytes,
        cross: dict[str, tuple[str, bool]],
        last: tuple[float, ...] = (),
        row: int = -1,
        segments: tuple[str, ...] = (),
    ) -> None:
        self.values = values  # the source's mapping: the part is valid while it is returned
        self.idx = idx  # the part's slots
        self.val = val
        self.json = json  # its keys as JSON object members (an item's: after a comma)
        self.cross = cross  # per field in a cross with another part: (slot key, present)
        self.last = last  # its request-time features' sources (NaN: none)
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
        self._user_since_names = since_names[: len(self._since[_USER_SINCE])]
        self._item_since_keys = [
            b',"' + n.encode() + b'":' for n in since_names[len(self._user_since_names) :]
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
        self._table = _Table(self._base, len(self._since[_ITEM_SINCE]), max_items)
        self._lock = threading.Lock()

    # -- parts ------------------------------------------------------------------------------
    def _cross_keys(self, part: int, row: Mapping[str, Scalar]) -> dict[str, tuple[str, bool]]:
        return {
            f: (slot_key(f, row.get(f)), row.get(f) is not None) for f in self._cross_fields[part]
        }

    def _part(
        self, part: int, values: object, row: dict[str, Scalar], last: tuple[float, ...] = ()
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

    def _lasts(
        self, entity: str, part: int, stored: Mapping[str, Scalar] | None
    ) -> tuple[float, ...]:
        sources = self.served.since[entity]
        if not stored:
            return (float("nan"),) * len(self._since[part])
        return tuple(_last(stored.get(sources[i][1])) for i in self._since[part])

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
        got = [known.get(i) for i in ids]
        missing = [
            k
            for k, (p, s) in enumerate(zip(got, stored, strict=True))
            if p is None or p.values is not s
        ]
        if not missing:
            return got  # type: ignore[return-value]
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
                )
                known[ids[k]] = got[k] = p
            table.used += len(rows)
        return got  # type: ignore[return-value]

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
        rows = np.fromiter([p.row for p in parts], np.intp, n)
        idx = table.idx[rows]
        val = table.val[rows]
        usr = self._user_part(request.user_id, user)
        const = self._const(self._request_part(request), usr)
        idx[:, self._const_slots] = const.idx
        val[:, self._const_slots] = const.val
        head = b"{" + const.json
        tails: list[bytes] = []
        if len(self._since_slots):  # request-time features: the user's, then the items'
            nu = len(usr.last)
            last = np.empty((n, nu + table.last.shape[1]))
            last[:, :nu] = usr.last
            last[:, nu:] = table.last[rows]
            ages = np.where(last != last, -1.0, np.rint((now - last) * 1000) / 1000)
            val[:, self._since_slots] = self.featuriser.numeric(ages)[:, self._since_cols]
            if nu:
                user_ages = ages[0, :nu].tolist()
                members = _members(dict(zip(self._user_since_names, user_ages, strict=True)))
                head += b"," + members if len(head) > 1 else members
            keys = self._item_since_keys
            if len(keys) == 1:
                tails = [
                    keys[0] + v for v in _ENCODER.encode(ages[:, nu].tolist())[1:-1].split(b",")
                ]
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
            prefix, suffix = const.prefix[j], const.suffix[j]
            keys_j = [prefix + p.segments[j] + suffix for p in parts]
            idx[:, slot] = self.featuriser.indices(keys_j)
            if not const.present[j]:
                val[:, slot] = 0.0
        if len(head) == 1:  # nothing constant: an item's JSON starts without its comma
            if tails:
                features = [
                    b"{" + (p.json + t)[1:] + b"}" for p, t in zip(parts, tails, strict=True)
                ]
            else:
                features = [b"{" + p.json[1:] + b"}" for p in parts]
        elif tails:
            features = [head + p.json + t + b"}" for p, t in zip(parts, tails, strict=True)]
        else:
            features = [head + p.json + b"}" for p in parts]
        return Candidates(idx, val, features)

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
        return Candidates(idx, val, [_ENCODER.encode(r) for r in rows])
