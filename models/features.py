"""Feature spec and featuriser: raw rows → fixed-width hashed ``(idx, val)`` arrays.

Every row becomes ``K = spec.n_slots`` (index, value) pairs in a hashed space of
``2**hash_bits`` coordinates:

* slot 0 is the bias: index 0, value 1;
* one slot per categorical field ``f``: index of ``"f=v"``, value 1 (0 when missing);
* one slot per numeric field ``f``: index of ``"f"``, value ``transform(x)`` (0 when
  missing, ``None``, not a number, or not finite); a field may be both categorical and
  numeric (an integer with few distinct values: one slot learns any shape, one the
  trend);
* one slot per cross ``(a, b, …)``: index of ``"a=va^b=vb…"``, value 1 when every field
  is present, else 0.

Hashing is xxh3-64 (stable across processes; Python's salted ``hash`` is never used),
reduced modulo the dimension; index 0 is reserved for the bias, so a hash landing on 0
is moved to 1. Bad values never raise: a stream must not stop on one bad row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import xxhash

from streamlearn.models.errors import FeatureError

NUMERIC_TRANSFORMS = ("log1p", "identity")
_MAX_HASH_BITS = 30
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@lru_cache(maxsize=1 << 16)
def _digest(key: str) -> int:
    """xxh3-64 of ``key``; bounded LRU so 1M distinct ids keep memory flat."""
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"))


def hash_index(key: str, dim: int) -> int:
    """Index of ``key`` in ``[1, dim)``: xxh3-64 modulo ``dim``, 0 mapped to 1."""
    return (_digest(key) % dim) or 1


def _category(value: object) -> str | None:
    """String form of a categorical value; ``None`` when missing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def slot_key(field: str, value: object) -> str:
    """The key a categorical field's slot hashes: ``"field=value"``, ``"field="`` when the
    value is missing (as the transforms write it, crosses joining keys with ``^``)."""
    v = value if type(value) is str else _category(value)
    return field + "=" if v is None else field + "=" + v


def _number(value: object) -> float | None:
    """Finite float of ``value``; ``None`` when missing, non-numeric or not finite."""
    if value is None:
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _numbers(values: list[object]) -> np.ndarray:
    """float64 of ``values``, 0 where missing, non-numeric or not finite (as :func:`_number`).

    numpy converts a clean column (numbers, ``None``, numeric strings) in one call; a
    column with anything else falls back to :func:`_number` value by value.
    """
    try:
        nums = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        nums = np.array([_number(v) for v in values], dtype=np.float64)
    if nums.ndim != 1:
        nums = np.array([_number(v) for v in values], dtype=np.float64)
    nums[~np.isfinite(nums)] = 0.0  # None (missing or bad) became NaN
    return nums


def _number_column(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """:func:`_numbers` of a column: one ``fromiter`` (numpy converts numbers and numeric
    strings as ``np.array`` does), the value-by-value fallback when it raises; an array
    is taken as float64 numbers."""
    if isinstance(values, np.ndarray):
        nums = values.astype(np.float64)  # a copy: the caller's array is left as it is
        nums[~np.isfinite(nums)] = 0.0
        return nums
    try:
        nums = np.fromiter(values, dtype=np.float64, count=len(values))
    except (TypeError, ValueError, OverflowError):
        return _numbers(list(values))
    nums[~np.isfinite(nums)] = 0.0
    return nums


@dataclass(frozen=True)
class DictColumn:
    """A dictionary-encoded column: ``codes`` (int, -1 where missing) into ``values``."""

    codes: np.ndarray
    values: Sequence[object]


def dict_column(values: Sequence[object]) -> DictColumn:
    """``values`` (raw, ``None`` where missing) dictionary-encoded by Arrow.

    A column of strings (and ``None``) is encoded as it is; any other value is first
    turned into its categorical string (as :meth:`Featuriser.transform_many` does), so
    ``1`` and ``1.0`` stay two categories."""
    import pyarrow as pa  # lazy: serving's scorers never pay for it
    import pyarrow.compute as pc

    try:
        arr = pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        arr = pa.array([_category(v) for v in values], type=pa.string())
    enc = arr.dictionary_encode()
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
    return DictColumn(codes, enc.dictionary.to_pylist())


@dataclass(frozen=True)
class FeatureSpec:
    """Declared features of a model; travels in every snapshot's metadata."""

    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    crosses: tuple[tuple[str, ...], ...] = ()
    hash_bits: int = 20
    numeric_transform: str = "log1p"

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the spec stays hashable.
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        object.__setattr__(self, "crosses", tuple(tuple(c) for c in self.crosses))
        if not 1 <= self.hash_bits <= _MAX_HASH_BITS:
            raise FeatureError(
                f"hash_bits must be in [1, {_MAX_HASH_BITS}], got {self.hash_bits!r}"
            )
        if self.numeric_transform not in NUMERIC_TRANSFORMS:
            raise FeatureError(
                f"numeric_transform must be one of {NUMERIC_TRANSFORMS}, "
                f"got {self.numeric_transform!r}"
            )
        for kind, names in (("categorical", self.categorical), ("numeric", self.numeric)):
            if len(set(names)) != len(names):
                raise FeatureError(f"{kind} feature names must be unique, got {list(names)}")
        for cross in self.crosses:
            unknown = [f for f in cross if f not in self.categorical]
            if len(cross) < 2 or unknown:
                raise FeatureError(
                    "a cross needs two or more categorical fields, "
                    f"got {list(cross)} (not categorical: {unknown})"
                )

    @property
    def n_slots(self) -> int:
        """Width ``K`` of a featurised row: bias + categorical + numeric + crosses."""
        return 1 + len(self.categorical) + len(self.numeric) + len(self.crosses)

    @property
    def dim(self) -> int:
        """Size of the hashed space, ``2**hash_bits``."""
        return 1 << self.hash_bits

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; ``FeatureSpec.from_dict(spec.to_dict()) == spec``."""
        return {
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "crosses": [list(c) for c in self.crosses],
            "hash_bits": self.hash_bits,
            "numeric_transform": self.numeric_transform,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`FeatureError`."""
        known = {"categorical", "numeric", "crosses", "hash_bits", "numeric_transform"}
        extra = set(data) - known
        if extra:
            raise FeatureError(
                f"feature spec keys must be among {sorted(known)}, got extra {sorted(extra)}"
            )
        return cls(
            categorical=tuple(data.get("categorical", ())),
            numeric=tuple(data.get("numeric", ())),
            crosses=tuple(tuple(c) for c in data.get("crosses", ())),
            hash_bits=int(data.get("hash_bits", 20)),
            numeric_transform=str(data.get("numeric_transform", "log1p")),
        )


class Featuriser:
    """Encodes raw rows by a :class:`FeatureSpec`; stateless apart from a shared hash cache.

    Rows are featurised column by column (one pass per field over the batch), which keeps
    the per-row Python work to a dictionary lookup and a cached hash per slot.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._num_idx = [hash_index(f, spec.dim) for f in spec.numeric]

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])  # type: ignore[misc]

    def _indices(self, keys: list[str]) -> np.ndarray:
        digests = np.fromiter(map(_digest, keys), dtype=np.uint64, count=len(keys))
        idx = (digests % np.uint64(self.spec.dim)).astype(np.int64)
        idx[idx == 0] = 1
        return idx

    def _numeric_values(self, nums: np.ndarray) -> np.ndarray:
        if self.spec.numeric_transform == "log1p":
            nums = np.sign(nums) * np.log1p(np.abs(nums))
        # np.minimum(np.maximum()) is np.clip, NaN and all, without its wrapper's ~7 µs
        return np.minimum(np.maximum(nums, -_FLOAT32_MAX), _FLOAT32_MAX)

    def transform_columns(
        self,
        n: int,
        numeric: Mapping[str, np.ndarray],
        categorical: Mapping[str, DictColumn],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``n`` rows given column by column; the same arrays as :meth:`transform_many`.

        A categorical field is a :class:`DictColumn` (each distinct value is hashed once,
        so a column of 10^6 rows and 10^3 values costs 10^3 hashes); a numeric field is a
        float64 array, NaN where missing. A field absent from its mapping is missing in
        every row. This is the fast path for tables (``eval`` reads Arrow columns).
        """
        spec = self.spec
        idx = np.zeros((n, spec.n_slots), dtype=np.int64)
        val = np.zeros((n, spec.n_slots), dtype=np.float32)
        val[:, 0] = 1.0
        # Per field: the keys of its distinct values, the missing key last, and row codes.
        keys_of: dict[str, list[str]] = {}
        codes_of: dict[str, np.ndarray] = {}
        slot = 1
        for f in spec.categorical:
            col = categorical.get(f)
            values: Sequence[object] = () if col is None else col.values
            prefix = f + "="
            cats = [_category(v) for v in values]
            keys = [prefix if c is None else prefix + c for c in cats]
            keys.append(prefix)
            missing = len(keys) - 1
            if col is not None:
                codes = np.asarray(col.codes, dtype=np.int64)
                codes = np.where(codes < 0, missing, codes)
                present = np.array([c is not None for c in cats] + [False])[codes]
            else:
                codes = np.full(n, missing, dtype=np.int64)
                present = np.zeros(n, dtype=bool)
            keys_of[f], codes_of[f] = keys, codes
            idx[:, slot] = self._indices(keys)[codes]
            val[:, slot] = present
            slot += 1
        for f, i in zip(spec.numeric, self._num_idx, strict=True):
            given = numeric.get(f)
            nums = np.zeros(n) if given is None else np.array(given, dtype=np.float64)
            nums[~np.isfinite(nums)] = 0.0
            idx[:, slot] = i
            val[:, slot] = self._numeric_values(nums)
            slot += 1
        for cross in spec.crosses:
            first = cross[0]
            codes, keys = codes_of[first], keys_of[first]
            for f in cross[1:]:
                pair = codes * len(keys_of[f]) + codes_of[f]
                uniq, codes = np.unique(pair, return_inverse=True)
                width = len(keys_of[f])
                keys = [keys[u // width] + "^" + keys_of[f][u % width] for u in uniq.tolist()]
            idx[:, slot] = self._indices(keys)[codes]
            val[:, slot] = np.logical_and.reduce(
                [val[:, 1 + spec.categorical.index(f)] > 0 for f in cross]
            )
            slot += 1
        return idx, val

    def transform_lists(
        self, n: int, columns: Mapping[str, Sequence[object] | np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``n`` rows given as one sequence of raw values per field (``None`` where
        missing; a numeric field may come as a float array already); the same arrays as
        :meth:`transform_many` on the rows as dicts.

        Each categorical column is dictionary-encoded by Arrow first, so a value is
        hashed once per call however many rows carry it (a stream's batch repeats its
        users, items and categories); then :meth:`transform_columns` does the rest. This
        is the online trainer's path: its decoder gives columns, not dicts.
        """
        categorical = {
            f: dict_column(columns[f])  # type: ignore[arg-type]
            for f in self.spec.categorical
            if f in columns
        }
        numeric = {f: _number_column(columns[f]) for f in self.spec.numeric if f in columns}
        return self.transform_columns(n, numeric, categorical)

    def transform_one(self, x: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
        """Encode one row: ``(idx int64 (K,), val float32 (K,))``."""
        idx, val = self.transform_many([x])
        return idx[0], val[0]

    def transform_many(self, xs: Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode rows: ``(idx int64 (n, K), val float32 (n, K))``; inputs are not modified."""
        spec = self.spec
        n = len(xs)
        idx = np.zeros((n, spec.n_slots), dtype=np.int64)
        val = np.zeros((n, spec.n_slots), dtype=np.float32)
        val[:, 0] = 1.0
        slot = 1
        keys_of: dict[str, list[str]] = {}
        slot_of: dict[str, int] = {}
        for f in spec.categorical:
            col = [v if type(v) is str else _category(v) for v in (x.get(f) for x in xs)]
            prefix = f + "="
            keys_of[f] = keys = [prefix if v is None else prefix + v for v in col]
            slot_of[f] = slot
            idx[:, slot] = self._indices(keys)
            val[:, slot] = [v is not None for v in col]
            slot += 1
        for f, i in zip(spec.numeric, self._num_idx, strict=True):
            idx[:, slot] = i
            val[:, slot] = self._numeric_values(_numbers([x.get(f) for x in xs]))
            slot += 1
        for cross in spec.crosses:
            # "a=va^b=vb": the fields' own keys joined, so a missing value reads "a=".
            idx[:, slot] = self._indices(
                list(map("^".join, zip(*(keys_of[f] for f in cross), strict=True)))
            )
            val[:, slot] = np.logical_and.reduce([val[:, slot_of[f]] > 0 for f in cross])
            slot += 1
        return idx, val

    def indices(self, keys: list[str]) -> np.ndarray:
        """Hashed indices (int64) of slot keys such as ``"f=v"`` or ``"a=va^b=vb"``, as
        the transforms compute them (for callers assembling rows from parts)."""
        return self._indices(keys)

    def numeric(self, nums: np.ndarray) -> np.ndarray:
        """The values of numeric slots for finite float64 ``nums``, as the transforms
        compute them (before the cast to float32)."""
        return self._numeric_values(nums)
