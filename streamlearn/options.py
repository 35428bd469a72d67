"""Options shared by several commands; every flag also has a ``STREAMLEARN_…`` env var."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamlearn.settings import kafka_config
from streams.config import KafkaConfig

BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        envvar="STREAMLEARN_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers (host:port,…). Unset: the embedded broker (up) or "
        "the one `up` started.",
    ),
]
TopicPrefix = Annotated[
    str,
    typer.Option(
        "--topic-prefix", envvar="STREAMLEARN_TOPIC_PREFIX", help="Prefix of every topic."
    ),
]
Partitions = Annotated[
    int,
    typer.Option(
        "--partitions", envvar="STREAMLEARN_PARTITIONS", min=1, help="Partitions per topic created."
    ),
]
KafkaOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--kafka-option",
        envvar="STREAMLEARN_KAFKA_OPTIONS",
        help="Extra librdkafka setting key=value (repeatable), e.g. security.protocol=SASL_SSL.",
    ),
]
DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="STREAMLEARN_DATA_DIR",
        help="Where state stores, the model registry and logs live.",
    ),
]
MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        envvar="STREAMLEARN_METRICS_PORT",
        help="Prometheus /metrics port on 127.0.0.1 (0: none).",
    ),
]
MetricsHost = Annotated[
    str,
    typer.Option(
        "--metrics-host",
        envvar="STREAMLEARN_METRICS_HOST",
        help="Address the metrics endpoint binds (loopback by default).",
    ),
]
Model = Annotated[
    str, typer.Option("--model", envvar="STREAMLEARN_MODEL", help="Model name (registry key).")
]

DEFAULT_PREFIX = "streamlearn."
DEFAULT_PARTITIONS = 4
DEFAULT_DATA_DIR = Path("var")


def require_kafka(
    bootstrap: str | None, prefix: str, partitions: int, opts: list[str] | None
) -> KafkaConfig:
    """The Kafka config of a command that needs a broker; a usage error when none is set."""
    if not bootstrap:
        raise typer.BadParameter(
            "no broker: pass --bootstrap-servers (or STREAMLEARN_BOOTSTRAP_SERVERS), "
            "or run `streamlearn up`, which starts the embedded broker"
        )
    return kafka_config(bootstrap, prefix, partitions, opts)
