import pickle

import numpy as np
import pytest
import xxhash

from streamlearn.models.errors import FeatureError, ModelError
from streamlearn.models.features import DictColumn, FeatureSpec, Featuriser, hash_index

SPEC = FeatureSpec(
    categorical=("user", "item"), numeric=("pos",), crosses=(("user", "item"),), hash_bits=12
)


def test_spec_round_trips_through_json_dict() -> None:
    import json

    restored = FeatureSpec.from_dict(json.loads(json.dumps(SPEC.to_dict())))
    assert restored == SPEC
    assert SPEC.n_slots == 5
    assert SPEC.dim == 4096


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hash_bits": 0},
        {"numeric_transform": "sqrt"},
        {"categorical": ("a", "a")},
        {"numeric": ("x", "x")},
        {"categorical": ("a", "b"), "crosses": (("a", "c"),)},
    ],
)
def test_bad_specs_raise_feature_error(kwargs: dict) -> None:
    with pytest.raises(FeatureError):
        FeatureSpec(**kwargs)
    assert issubclass(FeatureError, ModelError)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(FeatureError, match="extra"):
        FeatureSpec.from_dict({"categorical": ["a"], "bogus": 1})


def test_layout_and_hashing() -> None:
    f = Featuriser(SPEC)
    idx, val = f.transform_one({"user": "u1", "item": 7, "pos": 3})
    assert idx.dtype == np.int64 and val.dtype == np.float32 and idx.shape == (5,)
    dim = SPEC.dim
    assert idx[0] == 0 and val[0] == 1.0
    assert idx[1] == (xxhash.xxh3_64_intdigest(b"user=u1") % dim or 1)
    assert idx[2] == hash_index("item=7", dim)
    assert idx[3] == hash_index("pos", dim)
    assert val[3] == pytest.approx(np.log1p(3.0))
    assert idx[4] == hash_index("user=u1^item=7", dim)
    assert val[1:].tolist() == pytest.approx([1.0, 1.0, np.log1p(3.0), 1.0])


def test_floats_are_stringified_with_repr() -> None:
    f = Featuriser(SPEC)
    idx, _ = f.transform_one({"item": 2.5})
    assert idx[2] == hash_index("item=2.5", SPEC.dim)


def test_missing_none_and_bad_values_are_zero_not_errors() -> None:
    f = Featuriser(SPEC)
    _, val = f.transform_one({"user": None, "pos": "not a number"})
    assert val.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    _, val = f.transform_one({"user": "u", "item": "i", "pos": float("inf")})
    assert val[3] == 0.0 and val[4] == 1.0
    _, val = f.transform_one({"pos": "-2.0"})
    assert val[3] == pytest.approx(-np.log1p(2.0))


def test_identity_transform_and_float32_range() -> None:
    f = Featuriser(FeatureSpec(numeric=("x",), numeric_transform="identity"))
    _, val = f.transform_many([{"x": 2.5}, {"x": 1e300}])
    assert val[0, 1] == 2.5
    assert np.isfinite(val[1, 1])


def test_bias_index_never_used_by_features() -> None:
    f = Featuriser(FeatureSpec(categorical=("c",), hash_bits=1))
    idx, _ = f.transform_many([{"c": str(i)} for i in range(200)])
    assert set(idx[:, 1].tolist()) == {1}


def test_transform_many_matches_transform_one_and_does_not_mutate() -> None:
    f = Featuriser(SPEC)
    rows = [{"user": f"u{i}", "item": i % 3, "pos": i} for i in range(20)] + [{}]
    before = [dict(r) for r in rows]
    idx, val = f.transform_many(rows)
    assert rows == before
    for r, row in enumerate(rows):
        one_idx, one_val = f.transform_one(row)
        np.testing.assert_array_equal(idx[r], one_idx)
        np.testing.assert_array_equal(val[r], one_val)


def test_featuriser_pickles_and_is_stable_across_instances() -> None:
    f = Featuriser(SPEC)
    g = pickle.loads(pickle.dumps(f))
    row = {"user": "α", "item": "β", "pos": 1}
    np.testing.assert_array_equal(f.transform_one(row)[0], g.transform_one(row)[0])


def test_empty_batch() -> None:
    idx, val = Featuriser(SPEC).transform_many([])
    assert idx.shape == (0, 5) and val.shape == (0, 5)


def _dict_column(values: list[object]) -> DictColumn:
    uniques: dict[object, int] = {}
    codes = [-1 if v is None else uniques.setdefault(v, len(uniques)) for v in values]
    return DictColumn(np.array(codes), list(uniques))


def test_transform_columns_equals_transform_many() -> None:
    from streamlearn.models import checks

    spec = FeatureSpec(
        categorical=("user", "item", "surface", "position"),
        numeric=("position", "price", "absent"),
        crosses=(("user", "item"), ("user", "item", "surface")),
        hash_bits=12,
    )
    rows, _ = checks.make_stream(500, 0)
    rows += [{}, {"user": None, "item": 3, "price": float("inf")}, {"surface": True}]
    want = Featuriser(spec).transform_many(rows)
    categorical = {
        f: _dict_column([r.get(f) for r in rows]) for f in ("user", "item", "surface", "position")
    }
    numeric = {
        f: np.array([r.get(f) for r in rows], dtype=np.float64) for f in ("position", "price")
    }
    got = Featuriser(spec).transform_columns(len(rows), numeric, categorical)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_numeric_fast_path_agrees_with_value_by_value() -> None:
    spec = FeatureSpec(numeric=("x",), numeric_transform="identity", hash_bits=8)
    f = Featuriser(spec)
    clean = [1, 2.5, None, "3.5", True, float("nan"), float("-inf")]
    dirty = [*clean, "abc", [1, 2], {"a": 1}, 10**400]
    for values in (clean, dirty):
        _, val = f.transform_many([{"x": v} for v in values])
        assert val[:, 1].tolist()[:7] == [1.0, 2.5, 0.0, 3.5, 1.0, 0.0, 0.0]
        assert val[7:, 1].tolist() == [0.0] * (len(values) - 7)


def test_transform_lists_equals_transform_many() -> None:
    """The online trainer's path (one list of raw values per field, Arrow's dictionary
    encoding) gives the same arrays as rows of dicts, whatever the values: categories
    that are numbers (1 and 1.0 stay apart), missing ones, numeric strings, bad numbers,
    a field both categorical and numeric, a numeric column given as an array."""
    from streamlearn.models import checks

    spec = FeatureSpec(
        categorical=("user", "item", "surface", "position"),
        numeric=("position", "price", "absent", "ctr"),
        crosses=(("user", "item"), ("user", "item", "surface")),
        hash_bits=12,
    )
    rows, _ = checks.make_stream(500, 0)
    rows += [
        {},
        {"user": None, "item": 3, "price": float("inf")},
        {"surface": True, "item": 3.0, "price": "2.5"},
        {"item": "3", "price": "abc", "position": 10**30},
        {"user": "é\u2603", "price": -1e300},
    ]
    for i, r in enumerate(rows):
        r["ctr"] = i / 7
    f = Featuriser(spec)
    want = f.transform_many(rows)
    names = ("user", "item", "surface", "position", "price", "absent")
    columns: dict[str, object] = {k: [r.get(k) for r in rows] for k in names}
    columns["ctr"] = np.array([r["ctr"] for r in rows])
    got = f.transform_lists(len(rows), columns)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert columns["ctr"][3] == 3 / 7  # type: ignore[index]  # the caller's array untouched
