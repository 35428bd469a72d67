"""Commands run beside ``up`` find its embedded broker while that ``up`` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from streamlearn.cli.options import KafkaOptions
from streamlearn.stack import address


def test_the_address_is_read_back_while_its_writer_lives(tmp_path: Path) -> None:
    assert address.running_broker(tmp_path) is None
    path = address.write(tmp_path, "127.0.0.1:40123")
    assert path == tmp_path / "run" / "broker"
    assert address.running_broker(tmp_path) == "127.0.0.1:40123"
    address.remove(tmp_path)
    assert address.running_broker(tmp_path) is None


def test_an_up_killed_before_it_removed_the_file_is_not_found(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.split()[0]  # fmt: skip
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "broker").write_text(f"127.0.0.1:40123 {gone}\n")
    assert address.running_broker(tmp_path) is None


def test_kafka_options_use_the_running_broker_of_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMLEARN_DATA_DIR", str(tmp_path))
    with pytest.raises(typer.BadParameter, match="no broker"):
        KafkaOptions().config()
    address.write(tmp_path, "127.0.0.1:40123")
    assert KafkaOptions().config().bootstrap_servers == "127.0.0.1:40123"
    # a broker named on the command line wins
    named = KafkaOptions(bootstrap_servers="10.0.0.1:9092").config()
    assert named.bootstrap_servers == "10.0.0.1:9092"
