"""Block columns (rows that come in blocks: a query, a protein, a session) and the
within-block z-scores ``eval`` adds for them: exact, causal (no later row, no label),
found only where the rows really come in blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.offline import tables
from streamlearn.offline.prequential import EvalConfig, prepare


def naive(x: list[float | None], block: list[object]) -> list[float | None]:
    out: list[float | None] = []
    for r, v in enumerate(x):
        if v is None:
            out.append(None)
            continue
        seen = np.array([x[i] for i in range(r + 1) if block[i] == block[r] and x[i] is not None])
        spread = seen.std()
        out.append(0.0 if spread <= 1e-12 else float((v - seen.mean()) / spread))
    return out


def test_within_block_is_the_z_score_over_the_block_so_far() -> None:
    rng = np.random.default_rng(0)
    block = ["a"] * 7 + ["b"] * 5 + ["a"] * 4 + [None] * 3  # "a" comes back; nulls are a block
    x: list[float | None] = [float(v) for v in rng.normal(1000.0, 50.0, len(block))]
    x[2] = x[8] = None
    x[0] = None  # a block's first row missing
    table = pa.table({"b": block, "x": pa.array(x, pa.float64())})
    out = tables.within_block(table, "b", ["x"])
    got = out.column("x@b").to_pylist()
    want = naive(x, block)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            assert g == pytest.approx(w, abs=1e-9)


def test_within_block_never_reads_a_later_row() -> None:
    rng = np.random.default_rng(1)
    n = 400
    block = np.repeat(np.arange(8), 50)
    x = rng.normal(0, 1, n)
    before = tables.within_block(pa.table({"b": block, "x": x}), "b", ["x"]).column("x@b")
    changed = x.copy()
    changed[200:] = rng.normal(100, 30, n - 200)  # rewrite the future
    after = tables.within_block(pa.table({"b": block, "x": changed}), "b", ["x"]).column("x@b")
    np.testing.assert_array_equal(before.to_numpy()[:200], after.to_numpy()[:200])


def test_block_columns_are_found_only_where_rows_come_in_blocks() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    table = pa.table(
        {
            "query": np.repeat(np.arange(40), 50),  # blocks of 50
            "row_id": np.arange(n),  # an id
            "country": np.where(rng.random(n) < 0.9, "us", rng.choice(["de", "fr"], n)),
            "user": rng.integers(0, 100, n),  # interleaved
            "constant": np.zeros(n, dtype=np.int64),
            "score": rng.normal(0, 1, n),  # a float is never a block id
        }
    )
    assert tables.block_columns(table, table.column_names) == ["query"]


def test_eval_adds_within_block_features_for_a_block_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    query = np.repeat(np.arange(30), 100)
    shift = rng.normal(0, 3, 30)[query]  # each block's scores sit at their own level
    score = shift + rng.normal(0, 1, n)
    label = (score - shift > 1.0).astype(np.int64)  # relevant: high *within* its block
    path = tmp_path / "blocks.parquet"
    pq.write_table(pa.table({"query": query, "score": score, "label": label}), path)

    found = prepare(EvalConfig(data=path))
    assert found.block_column == "query" and found.block_features == ("score@query",)
    assert "score@query" in found.spec.numeric
    off = prepare(EvalConfig(data=path, block_column="none"))
    assert off.block_column is None and off.spec.numeric == ("query", "score")
    named = prepare(EvalConfig(data=path, block_column="query", features=("score",)))
    assert named.block_features == ("score@query",)
