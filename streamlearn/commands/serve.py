"""``streamlearn serve``: the prediction service (HTTP API and request topic)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from serving.app import ServingConfig, run_serving
from streamlearn import options as o
from streamlearn.settings import data_dir, kafka_config
from streams.topics import Topics, ensure_topics

log = logging.getLogger(__name__)

Host = Annotated[
    str,
    typer.Option("--host", envvar="STREAMLEARN_SERVE_HOST", help="Address to bind HTTP on."),
]
Port = Annotated[
    int,
    typer.Option(
        "--port", envvar="STREAMLEARN_SERVE_PORT", min=0, max=65535, help="HTTP port (0: any free)."
    ),
]
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        envvar="STREAMLEARN_MODEL",
        help="Model to serve (repeatable; env: space-separated). The first one also answers "
        "the prediction-request topic. Default: feed.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``serve``."""

    @app.command()
    def serve(
        host: Host = "127.0.0.1",
        port: Port = 8080,
        model: Models = None,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        bootstrap_servers: o.BootstrapServers = None,
        topic_prefix: o.TopicPrefix = o.DEFAULT_PREFIX,
        partitions: o.Partitions = o.DEFAULT_PARTITIONS,
        kafka_option: o.KafkaOptions = None,
    ) -> None:
        """Serve predictions over HTTP and the request topic, hot-swapping model versions."""
        if not bootstrap_servers:
            raise typer.BadParameter(
                "no broker: pass --bootstrap-servers (or STREAMLEARN_BOOTSTRAP_SERVERS), "
                "or run `streamlearn up`, which starts the embedded broker and serving"
            )
        try:
            kafka = kafka_config(bootstrap_servers, topic_prefix, partitions, kafka_option)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        topics = Topics(kafka.topic_prefix)
        main = [topics.features, topics.feature_log, topics.predictions, topics.prediction_requests]
        ensure_topics(kafka, [*main, topics.dlq(topics.prediction_requests)])
        ensure_topics(kafka, [topics.model_updates], partitions=1)
        root = data_dir(data)
        config = ServingConfig(
            host=host,
            port=port,
            models=tuple(model or ("feed",)),
            registry_dir=root / "registry",
            kafka=kafka,
            state_dir=root / "serving",
        )
        stop = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping serving", signum)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        run_serving(config, stop)
