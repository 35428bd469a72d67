"""Trainer ranks without a broker: messages between ranks, the static assignment, the
launcher's command lines."""

from __future__ import annotations

import numpy as np
import pytest

from streamlearn.stack.ranks import _without
from streamlearn.streams.learning.ranks import RankConfig, pack, rank_partitions, unpack


def test_messages_are_data_only_and_round_trip_arrays() -> None:
    msg = {
        "offsets": {"t/0": 3},
        "ids": np.array([1, 2**64 - 1], dtype=np.uint64),
        "p": np.linspace(0, 1, 5),
        "rows": [{"user": "u1", "price": 2.5}],
        "n": np.int64(7),
    }
    back = unpack(pack(msg))
    assert back["offsets"] == {"t/0": 3} and back["rows"] == msg["rows"] and back["n"] == 7
    np.testing.assert_array_equal(back["ids"], msg["ids"])
    assert back["ids"].dtype == np.uint64
    np.testing.assert_array_equal(back["p"], msg["p"])
    with pytest.raises(NotImplementedError):
        pack({"bad": object()})
    with pytest.raises(ValueError):
        unpack(pack({"a": np.array(["x"], dtype=object)}))


def test_each_partition_goes_to_one_rank() -> None:
    got = [rank_partitions(8, r, 3) for r in range(3)]
    assert got == [[0, 3, 6], [1, 4, 7], [2, 5]]
    with pytest.raises(ValueError, match="at least as many partitions as ranks"):
        rank_partitions(2, 0, 3)
    with pytest.raises(ValueError):
        RankConfig(rank=2, world=2)


def test_the_launcher_leaves_what_differs_per_rank_to_the_environment() -> None:
    argv = ["python", "-m", "streamlearn", "train", "--ranks", "2", "--metrics-port", "9100"]
    argv += ["--rendezvous=h:1", "--rank", "0", "--model", "feed"]
    assert _without(argv, ("--rank", "--rendezvous", "--metrics-port")) == [
        *("python", "-m", "streamlearn", "train", "--ranks", "2", "--model", "feed")
    ]
