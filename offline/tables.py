"""Tables in, learner inputs out: reading, labels, inferred feature specs, Arrow columns.

One home for what ``eval`` (:mod:`streamlearn.offline.prequential`) and batch training
(:mod:`streamlearn.offline.train`) both need from a table:

* :func:`read_table`: a CSV, JSONL or Parquet file, or a dataset directory of Parquet
  files, as one Arrow table.
* :func:`expand_features`: a ``features`` column of JSON objects (training examples)
  becomes one column per key.
* :func:`binary_labels`: a label column as 0/1. Numbers and booleans must be 0/1 (or
  -1/1); a column with two distinct strings is mapped automatically: ``1/0``,
  ``true/false``, ``yes/no``, ``y/n``, ``pos/neg``, ``positive/negative`` (any case) by
  their meaning, any other pair by frequency: the rarer value is the positive class (a
  an engagement, a churn, ``>50K``), ties broken by sort order. ``positive=`` overrides.
* :func:`id_columns`: string or integer columns with a distinct value on every row (at
  least :data:`ID_MIN_ROWS` rows). Such a column is a row id: a learner cannot
  generalise from a value it never sees again, so it is left out of the features.
* :func:`infer_spec`: strings, booleans and dictionaries are categorical; floats and
  decimals numeric; an integer column is numeric and, when its values repeat (at most
  one distinct value per :data:`REPEATS_FOR_CATEGORY` rows: an age, a store id, a
  session id), categorical too, so a linear model learns any shape over it.
* :func:`block_columns` and :func:`within_block`: a column whose rows come in blocks
  (each value in one or two contiguous runs of :data:`BLOCK_MIN_ROWS` rows or more on
  average: a protein in KDD Cup 2004, a query, a session) is a block id; each numeric
  column then also enters as its z-score within the block *so far* (the block's rows
  up to and including this one; never a later row, never a label), so a learner sees
  where a row stands in its block, which is what ranks candidates within one.
* :func:`feature_columns`: the Arrow columns in the form
  :meth:`streamlearn.models.features.Featuriser.transform_columns` takes (each distinct string is
  hashed once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from streamlearn.models.features import DictColumn, FeatureSpec
from streamlearn.offline.dataset import parquet_files
from streamlearn.offline.errors import DatasetError

FEATURES_COLUMN = "features"
#: A string or integer column is an id only in a table of at least this many rows.
ID_MIN_ROWS = 100
#: An integer column is also categorical when each distinct value covers this many rows.
REPEATS_FOR_CATEGORY = 10
#: A block column's runs (stretches of one value) hold at least this many rows on average.
BLOCK_MIN_ROWS = 20
#: Name of the within-block z-score of numeric column ``c`` in block column ``b``.
WITHIN_BLOCK = "{column}@{block}"
_FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_MEANINGFUL = {
    frozenset({"1", "0"}): "1",
    frozenset({"true", "false"}): "true",
    frozenset({"yes", "no"}): "yes",
    frozenset({"y", "n"}): "y",
    frozenset({"pos", "neg"}): "pos",
    frozenset({"positive", "negative"}): "positive",
}


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A file (CSV, JSONL, Parquet) or a directory of Parquet files as one table.

    :class:`DatasetError` when the path is missing, of an unknown kind, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        files = parquet_files(path)
        try:
            tables = [pq.read_table(f, columns=columns) for f in files]
        except (OSError, pa.ArrowInvalid, KeyError) as exc:
            raise DatasetError(f"cannot read Parquet at {path}: {exc}") from exc
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"data file must end in one of {sorted(_FORMATS)}, got {path.name!r}")
    if not path.is_file():
        raise DatasetError(f"expected a data file at {path}, found none")
    try:
        if fmt == "csv":
            table = pa_csv.read_csv(path)
        elif fmt == "jsonl":
            table = pa_json.read_json(path)
        else:
            table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise DatasetError(f"cannot read {path} as {fmt}: {exc}") from exc
    return table.select(columns) if columns is not None and fmt != "parquet" else table


# -- labels ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """0/1 labels and, for a string label, the value that became 1."""

    y: np.ndarray
    positive: str | None = None
    negative: str | None = None


def binary_labels(table: pa.Table, label: str, positive: str | None = None) -> Labels:
    """The ``label`` column as float64 0/1 (see the module docstring for the mapping)."""
    column = table.column(label)
    if column.null_count:
        raise DatasetError(f"label column {label!r} must have no nulls, got {column.null_count}")
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return _string_labels(column.cast(pa.string()), label, positive)
    if not (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DatasetError(f"label column {label!r} must be 0/1, boolean or text, got type {t}")
    y = column.to_numpy(zero_copy_only=False).astype(np.float64)
    if positive is not None:
        try:
            pos = float(positive)
        except ValueError:
            raise DatasetError(
                f"positive label for numeric column {label!r} must be a number, got {positive!r}"
            ) from None
        return Labels((y == pos).astype(np.float64), positive)
    distinct = set(np.unique(y).tolist())
    if distinct <= {-1.0, 1.0}:
        return Labels((y > 0).astype(np.float64), "1", "-1")
    bad = sorted(distinct - {0.0, 1.0})
    if bad:
        raise DatasetError(
            f"label column {label!r} must hold 0 or 1 (or -1/1), got also {bad[:5]}; "
            "name the positive value to map it (--positive)"
        )
    return Labels(y)


def _string_labels(column: pa.ChunkedArray, label: str, positive: str | None) -> Labels:
    counts = pc.value_counts(column).to_pylist()
    values = {str(c["values"]): int(c["counts"]) for c in counts}
    if positive is not None:
        if positive not in values:
            raise DatasetError(
                f"positive label {positive!r} is not a value of {label!r}: {sorted(values)[:5]}"
            )
    elif len(values) != 2:
        raise DatasetError(
            f"label column {label!r} must have two distinct values to map to 0/1, got "
            f"{len(values)}: {sorted(values)[:5]}; name the positive value (--positive)"
        )
    else:
        lower = {v.strip().lower(): v for v in values}
        meaning = _MEANINGFUL.get(frozenset(lower))
        if meaning is not None:
            positive = lower[meaning]
        else:  # the rarer value is the event of interest
            positive = min(sorted(values), key=lambda v: values[v])
    y = pc.equal(column, positive).to_numpy(zero_copy_only=False).astype(np.float64)
    rest = sorted(v for v in values if v != positive)
    return Labels(y, positive, rest[0] if len(rest) == 1 else None)


# -- features ----------------------------------------------------------------------------
def _feature_dicts(column: pa.ChunkedArray) -> list[dict[str, Any] | None] | None:
    """The rows of a ``features`` column as dicts, or ``None`` when it holds no JSON objects."""
    if pa.types.is_struct(column.type):
        return column.to_pylist()
    if pa.types.is_map(column.type):
        return [None if r is None else dict(r) for r in column.to_pylist()]
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    rows: list[dict[str, Any] | None] = []
    for text in column.to_pylist():
        if text is None:
            rows.append(None)
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        rows.append(obj)
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def typed_column(values: Sequence[Any]) -> pa.Array:
    """Python values as a column: float64 when every present value is a number, else
    strings (``str(v)``); ``None`` stays null."""
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        return pa.array(values, type=pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Dict rows as a table typed by :func:`typed_column`, one column per key (sorted)."""
    keys = sorted({k for r in rows for k in r})
    return pa.table({k: typed_column([r.get(k) for r in rows]) for k in keys})


def expand_features(table: pa.Table, reserved: Sequence[str] = ()) -> tuple[pa.Table, list[str]]:
    """Expand a ``features`` column of JSON objects into one column per key.

    Returns the table (``features`` replaced by the key columns, which win over top-level
    columns of the same name) and the keys, sorted; ``(table, [])`` unchanged
    when there is no such column. A key that is a number in every row is numeric
    (float64), any other key categorical (strings); a key missing from a row is null.
    """
    if FEATURES_COLUMN not in table.column_names:
        return table, []
    dicts = _feature_dicts(table.column(FEATURES_COLUMN))
    if dicts is None:
        return table, []
    keys: dict[str, None] = {}
    for d in dicts:
        for k in d or ():
            keys.setdefault(k, None)
    clash = [k for k in sorted(keys) if k in reserved]
    if clash:
        raise DatasetError(
            f"feature keys {clash} clash with the label or time column; pass --label/--time-column"
        )
    columns = {k: typed_column([None if d is None else d.get(k) for d in dicts]) for k in keys}
    rest = [c for c in table.column_names if c != FEATURES_COLUMN and c not in columns]
    out = table.select(rest)
    for k, arr in columns.items():
        out = out.append_column(k, arr)
    return out, list(columns)


def _is_categorical_type(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_boolean(t)
        or pa.types.is_dictionary(t)
        or pa.types.is_null(t)
    )


def id_columns(table: pa.Table, columns: Sequence[str]) -> list[str]:
    """String or integer ``columns`` whose value differs on every row (see module doc)."""
    n = table.num_rows
    if n < ID_MIN_ROWS:
        return []
    out = []
    for name in columns:
        column = table.column(name)
        t = column.type
        if not (_is_categorical_type(t) or pa.types.is_integer(t)) or pa.types.is_boolean(t):
            continue
        if column.null_count == 0 and pc.count_distinct(column).as_py() == n:
            out.append(name)
    return out


def infer_spec(
    table: pa.Table, feature_columns: Sequence[str], hash_bits: int, numeric_transform: str
) -> FeatureSpec:
    """The feature spec of ``feature_columns`` from their Arrow types (see module doc).

    A column without a single value is left out: it carries nothing to learn from.
    """
    categorical: list[str] = []
    numeric: list[str] = []
    n = max(table.num_rows, 1)
    for name in feature_columns:
        column = table.column(name)
        t = column.type
        if column.null_count == len(column):
            continue
        if pa.types.is_integer(t):
            numeric.append(name)
            if pc.count_distinct(column).as_py() * REPEATS_FOR_CATEGORY <= n:
                categorical.append(name)
        elif pa.types.is_floating(t) or pa.types.is_decimal(t):
            numeric.append(name)
        elif _is_categorical_type(t):
            categorical.append(name)
        else:
            raise DatasetError(
                f"feature column {name!r} must be a string, boolean or number, got type {t}"
            )
    return FeatureSpec(
        categorical=tuple(categorical),
        numeric=tuple(numeric),
        hash_bits=hash_bits,
        numeric_transform=numeric_transform,
    )


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer codes of a column's values (nulls are one more value)."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    return np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False))


def block_columns(table: pa.Table, columns: Sequence[str]) -> list[str]:
    """String or integer ``columns`` whose rows come in blocks (see the module docstring):
    at least two values, at most two runs per value, :data:`BLOCK_MIN_ROWS` rows per run
    on average, in the table's order."""
    n = table.num_rows
    out = []
    for name in columns:
        t = table.column(name).type
        if not (_is_categorical_type(t) or pa.types.is_integer(t)) or pa.types.is_boolean(t):
            continue
        codes = _codes(table.column(name))
        runs = 1 + int(np.count_nonzero(codes[1:] != codes[:-1])) if n else 0
        distinct = int(np.unique(codes).shape[0])
        if distinct >= 2 and runs <= 2 * distinct and runs * BLOCK_MIN_ROWS <= n:
            out.append(name)
    return out


def within_block(table: pa.Table, block: str, numeric: Sequence[str]) -> pa.Table:
    """``table`` with, for each column of ``numeric``, its z-score within ``block`` so far.

    Row ``r``'s value is ``(x_r − mean) / std`` over the present values of its block in
    rows ``0..r`` (0 while that spread is 0, null where ``x_r`` is missing), computed in
    the table's order from those rows alone. The columns are named by
    :data:`WITHIN_BLOCK` and appended.
    """
    codes = _codes(table.column(block))
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    first = np.ones(codes.shape[0], dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(codes.shape[0]), 0))
    starts = np.flatnonzero(first)
    block_of = np.cumsum(first) - 1
    out = table
    for name in numeric:
        x = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)[order]
        present = np.isfinite(x)
        # Shift each block by its first present value (a row at or before any row whose
        # score is computed) so the running sums stay small.
        at = np.minimum.reduceat(np.where(present, np.arange(x.shape[0]), x.shape[0]), starts)
        base = np.where(at < x.shape[0], x[np.minimum(at, x.shape[0] - 1)], 0.0)[block_of]
        d = np.where(present, x - base, 0.0)
        z = np.full(x.shape[0], np.nan)
        count, s1, s2 = (_block_cumsum(a, group_start) for a in (present * 1.0, d, d * d))
        ok = present & (count > 0)
        mean = np.divide(s1, count, out=np.zeros_like(s1), where=ok)
        var = np.divide(s2, count, out=np.zeros_like(s2), where=ok) - mean * mean
        spread = np.sqrt(np.maximum(var, 0.0))
        tiny = spread <= 1e-12 * (np.abs(mean) + np.abs(base) + 1.0)
        z[ok] = np.where(tiny[ok], 0.0, (d[ok] - mean[ok]) / np.where(tiny[ok], 1.0, spread[ok]))
        unsorted = np.empty_like(z)
        unsorted[order] = z
        column = pa.array(unsorted, type=pa.float64(), from_pandas=True)
        out = out.append_column(WITHIN_BLOCK.format(column=name, block=block), column)
    return out


def _block_cumsum(a: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``a`` restarting at each block (rows sorted by block)."""
    c = np.cumsum(a)
    before = np.concatenate([[0.0], c])[group_start]
    return np.asarray(c - before)


def feature_columns(
    table: pa.Table, spec: FeatureSpec
) -> tuple[dict[str, np.ndarray], dict[str, DictColumn]]:
    """``table``'s (numeric, categorical) columns for
    :meth:`~streamlearn.models.features.Featuriser.transform_columns`."""
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, DictColumn] = {}
    names = set(table.column_names)
    for name in spec.numeric:
        if name in names:
            column = table.column(name)
            if pa.types.is_boolean(column.type):
                column = column.cast(pa.int8())
            try:
                numeric[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                numeric[name] = np.full(table.num_rows, np.nan)  # not numbers: missing
    for name in spec.categorical:
        if name in names:
            encoded = pc.dictionary_encode(table.column(name).combine_chunks())
            codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            categorical[name] = DictColumn(codes, encoded.dictionary.to_pylist())
    return numeric, categorical
