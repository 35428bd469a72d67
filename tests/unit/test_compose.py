"""compose/ checked without Docker: the compose file against the Compose specification's
JSON schema (vendored in compose/schema/), every service command against the streamlearn
CLI, Prometheus' targets against the services, Grafana's provisioning against the
dashboards, and every dashboard and alert query through a PromQL parser.

What needs binaries (hadolint on the Dockerfile, promtool on the Prometheus config and
alert rules) runs in ``compose/validate``, called by ``.ci/run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from prometheus_client.metrics_core import Metric

from streamlearn.cli.root import app
from tests.metric_queries import COMPOSE, check, queries, selectors

SERVICES = ("features", "joiner", "trainer-feed", "trainer-ads", "serving", "simulator")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(_yaml(COMPOSE / "docker-compose.yml"))


def _parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse ``streamlearn ARGS`` as the CLI would, without running it; raise on a bad
    flag or command. Returns the command's parameters."""
    root = typer.main.get_command(app)
    ctx = root.make_context("streamlearn", list(args))
    cmd: Any = root
    while hasattr(cmd, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return dict(ctx.params)


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((COMPOSE / "schema" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    # and the schema does catch a mistake (a misspelt key)
    broken = {**compose, "services": {**compose["services"], "x": {"imagee": "python"}}}
    assert list(validator.iter_errors(broken))


def test_every_service_command_parses_with_the_cli(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(SERVICES) <= set(services)
    for name in SERVICES:
        params = _parse_cli(services[name]["command"])
        assert params, name
    with pytest.raises(Exception, match="No such option"):
        _parse_cli(["worker", "features", "--metrics-prot", "9100"])


def test_simulator_drives_serving_and_waits_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sim = services["simulator"]["command"]
    serving = services["serving"]["command"]
    assert sim[0] == "simulate"
    assert _flag(sim, "--serving-url") == f"http://serving:{_flag(serving, '--port')}"
    assert services["simulator"]["depends_on"]["serving"]["condition"] == "service_healthy"
    assert "healthcheck" in services["serving"]


def test_the_image_copies_every_package_the_distribution_installs() -> None:
    import tomllib

    pyproject = tomllib.loads((COMPOSE.parent / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        line.split()[1]
        for line in (COMPOSE / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and len(line.split()) == 3
    }
    assert packages <= copied, packages - copied


def test_kafka_keeps_its_data_in_the_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in kafka["volumes"]}
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].split(",")
    assert all(d in mounts and mounts[d] in compose["volumes"] for d in log_dirs), (
        log_dirs,
        mounts,
    )
    # a fixed cluster id, so a restart finds its formatted data directory
    assert kafka["environment"]["CLUSTER_ID"]


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_prometheus_scrapes_every_process_on_its_metrics_port(compose: dict[str, Any]) -> None:
    prom_dir = COMPOSE / "prometheus"
    config = _yaml(prom_dir / "prometheus.yml")
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    expected = {}
    for name in SERVICES:
        cmd = compose["services"][name]["command"]
        port = _flag(cmd, "--port") if cmd[0] == "serve" else _flag(cmd, "--metrics-port")
        if cmd[0] != "serve":
            assert _flag(cmd, "--metrics-host") == "0.0.0.0", name
        expected[name] = [f"{name}:{port}"]
    assert targets == expected
    # the rule files it loads are the ones mounted next to it
    mounts = compose["services"]["prometheus"]["volumes"]
    for rule_file in config["rule_files"]:
        assert f"./prometheus/{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts


def test_grafana_provisions_the_datasource_and_dashboards_it_queries(
    compose: dict[str, Any],
) -> None:
    prov = COMPOSE / "grafana" / "provisioning"
    (ds,) = _yaml(prov / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = _yaml(prov / "dashboards" / "streamlearn.yml")["providers"]
    mounts = dict(
        (v.split(":")[1], v.split(":")[0]) for v in compose["services"]["grafana"]["volumes"]
    )
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    dashboards = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and dash["panels"]
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == ds["uid"], panel["title"]


def test_every_query_parses_and_names_streamlearn_metrics() -> None:
    found = [sel for where, expr in queries() for sel in selectors(where, expr)]
    # the loop overview and the five kinds of alert are all there
    wheres = {sel.where.split(":")[1].strip() for sel in found if "alerts" in sel.where}
    assert {
        "StreamlearnDeadLetters",
        "StreamlearnConsumerLagGrowing",
        "StreamlearnAucDrop",
        "StreamlearnTrainerStalled",
        "StreamlearnPredictP99High",
    } <= wheres
    assert all(sel.name.startswith("streamlearn_") for sel in found), found


def test_the_name_check_sees_a_drifted_name_and_histogram_suffixes() -> None:
    """``check`` against made-up families: a histogram's ``_bucket`` counts as exported,
    a renamed counter does not, and a label value nobody has is reported."""
    hist = Metric("streamlearn_predict_latency_seconds", "", "histogram")
    hist.add_sample("streamlearn_predict_latency_seconds_bucket", {"le": "+Inf"}, 1.0)
    prog = Metric("streamlearn_progressive_metric", "", "gauge")
    prog.add_sample("streamlearn_progressive_metric", {"metric": "auc"}, 0.7)
    renamed = Metric("streamlearn_dead_letters", "", "counter")
    report = check([hist, prog, renamed])
    unknown = {sel.name for sel in report.unknown}
    assert "streamlearn_predict_latency_seconds_bucket" not in unknown
    assert "streamlearn_dlq_events_total" in unknown
    window_auc = ("metric", "=", "window_auc")
    assert any(
        sel.name == "streamlearn_progressive_metric" and window_auc in sel.matchers
        for sel in report.unmatched
    )
