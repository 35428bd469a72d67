"""The CLI's command table, its lazy loading, and which metric families each process
exports (a family is registered when the module defining it is imported)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import streamlearn.cli.commands
from streamlearn.cli.options import KafkaOptions, kafka_options, parse_grid, parse_params
from streamlearn.cli.root import COMMANDS, load_commands

ROOT = Path(__file__).resolve().parents[2]

#: Metric family prefixes that a command's process must not export (they belong to
#: other processes). Process-wide checks run in a fresh interpreter each.
FOREIGN = {
    "worker": ("streamlearn_simulator_", "streamlearn_predictions", "streamlearn_http_"),
    "serve": ("streamlearn_simulator_", "streamlearn_events_in", "streamlearn_examples_"),
    "simulate": ("streamlearn_events_", "streamlearn_predictions", "streamlearn_dlq_"),
    "up": ("streamlearn_",),
}


def test_the_command_table_names_every_command_of_every_module() -> None:
    registered: dict[str, str] = {}
    for mod in pkgutil.iter_modules(streamlearn.cli.commands.__path__):
        group = load_commands(mod.name)
        for name in group.list_commands(None):  # type: ignore[arg-type]
            registered[name] = mod.name
    assert registered == COMMANDS


def _families(command: str, *argv: str) -> list[str]:
    code = (
        "import json, sys\n"
        "from prometheus_client import REGISTRY\n"
        "from streamlearn.cli.root import COMMANDS, load_commands\n"
        "load_commands(COMMANDS[sys.argv[1]])\n"
        "print(json.dumps(sorted(m.name for m in REGISTRY.collect())))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, command, *argv],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("command", sorted(FOREIGN))
def test_a_process_exports_only_its_own_metric_families(command: str) -> None:
    families = [f for f in _families(command) if f.startswith("streamlearn_")]
    foreign = [f for f in families if f.startswith(FOREIGN[command])]
    assert foreign == [], f"streamlearn {command} exports {foreign}"
    if command != "up":
        assert families, f"streamlearn {command} exports no family of its own"


def test_key_value_flags_parse_one_way() -> None:
    assert parse_params(["alpha=0.1", " l2 = 1 ", "topic=a,b", "x=null", "s=text"]) == {
        "alpha": 0.1,
        "l2": 1,
        "topic": "a,b",
        "x": None,
        "s": "text",
    }
    assert parse_grid(["learner=ftrl,fm", "alpha=0.1, 0.5"]) == {
        "learner": ["ftrl", "fm"],
        "alpha": [0.1, 0.5],
    }
    for bad in (["alpha"], ["=1"]):
        with pytest.raises(typer.BadParameter, match="expected key=value"):
            parse_params(bad)
    with pytest.raises(typer.BadParameter, match="once"):
        parse_grid(["a=1", "a=2"])
    with pytest.raises(typer.BadParameter, match="at least one value"):
        parse_grid(["a=,"])


def test_kafka_options_arrive_as_one_value() -> None:
    seen: list[KafkaOptions] = []
    app = typer.Typer()

    @app.command()
    @kafka_options()
    def cmd(kafka_opts: KafkaOptions, name: str = "x") -> None:
        seen.append(kafka_opts)

    @app.command()
    @kafka_options(partitions=False)
    def few(kafka_opts: KafkaOptions) -> None:
        seen.append(kafka_opts)

    from typer.testing import CliRunner

    runner = CliRunner()
    args = ["cmd", "--bootstrap-servers", "h:1", "--partitions", "2", "--kafka-option", "a=b"]
    assert runner.invoke(app, [*args, "--name", "y"]).exit_code == 0
    config = seen[-1].config()
    assert (config.bootstrap_servers, config.partitions) == ("h:1", 2)
    assert config.client_overrides["a"] == "b"
    result = runner.invoke(app, ["few", "--partitions", "2"])
    assert result.exit_code == 2 and "No such option" in result.output
    result = runner.invoke(app, ["few"], env={"STREAMLEARN_BOOTSTRAP_SERVERS": None})
    assert result.exit_code == 0 and not seen[-1].given
    with pytest.raises(typer.BadParameter, match="no broker"):
        seen[-1].config()


def test_models_commands_change_stages_and_fail_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streamlearn.cli.root import app
    from streamlearn.models.registry import FileRegistry
    from streamlearn.models.snapshot import Snapshot

    reg = FileRegistry(tmp_path / "registry")
    for _ in range(2):
        reg.publish("m", Snapshot(b"onnx", b"", {}))
    runner = CliRunner()
    env = {"STREAMLEARN_BOOTSTRAP_SERVERS": None, "STREAMLEARN_DATA_DIR": str(tmp_path)}
    out = runner.invoke(app, ["models", "promote", "m", "1"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"model": "m", "production": 1, "previous": None}
    assert "no broker configured" in out.stderr
    out = runner.invoke(app, ["models", "reject", "m", "2", "--reason", "worse"], env=env)
    assert json.loads(out.stdout) == {"model": "m", "rejected": 2}
    out = runner.invoke(app, ["models", "rollback", "m"], env=env)
    assert out.exit_code == 2  # a StageError: the registry's state forbids it
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    listed = [
        json.loads(line)
        for line in runner.invoke(app, ["models", "list"], env=env).stdout.splitlines()
    ]
    assert [(r["version"], r["stage"]) for r in listed] == [(1, "production"), (2, "rejected")]
