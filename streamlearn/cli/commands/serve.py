"""``streamlearn serve``: the prediction service (HTTP API and request topic)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from streamlearn.cli import options as o
from streamlearn.cli.settings import ServeSettings, data_dir
from streamlearn.serving.app import ServingConfig, run_serving
from streamlearn.serving.server import HttpLimits
from streamlearn.serving.sink import FEATURE_LOG_WINDOW
from streamlearn.streams.kafka.topics import Topics, ensure_topics

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
        help="Model to serve (repeatable; env: space-separated). Default: every declared "
        "model of the project. A request on the request topic goes to the model its `model` "
        "header names, else to its surface's model; one for a model not served here gets "
        "an error reply.",
    ),
]

_LIMITS = HttpLimits()


def _limit(flag: str, help: str, kind: type = float) -> object:
    env = "STREAMLEARN_SERVE_" + flag.lstrip("-").replace("-", "_").upper()
    return typer.Option(flag, envvar=env, min=1 if kind is int else 0.001, help=help)


MaxConnections = Annotated[
    int,
    _limit(
        "--max-connections",
        "Open connections at most; a request on one more gets 503 and is closed.",
        int,
    ),
]
MaxBodyBytes = Annotated[int, _limit("--max-body-bytes", "Largest request body (413 above).", int)]
MaxHeaderBytes = Annotated[
    int,
    _limit("--max-header-bytes", "Largest request line + headers (431).", int),
]
RequestTimeout = Annotated[
    float,
    _limit(
        "--request-timeout",
        "Seconds from a request's first byte to its last (408 and closed after).",
    ),
]
KeepAlive = Annotated[
    float,
    _limit("--keep-alive-timeout", "Seconds an idle connection is kept open."),
]
FeatureLogWindow = Annotated[
    int,
    _limit(
        "--feature-log-window",
        "Feature-log records answered but not yet acknowledged by the broker, at most: what "
        "a crash can lose. Beyond it a record is dropped and counted, the request answered.",
        int,
    ),
]
ShutdownTimeout = Annotated[
    float,
    _limit("--shutdown-timeout", "Seconds to drain in-flight requests on stop."),
]


def register(app: typer.Typer) -> None:
    """Add ``serve``."""

    @app.command()
    @o.kafka_options()
    def serve(
        kafka_opts: o.KafkaOptions,
        host: Host = "127.0.0.1",
        port: Port = 8080,
        model: Models = None,
        project_dir: o.ProjectDir = None,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        max_connections: MaxConnections = _LIMITS.max_connections,
        max_body_bytes: MaxBodyBytes = _LIMITS.max_body_bytes,
        max_header_bytes: MaxHeaderBytes = _LIMITS.max_header_bytes,
        request_timeout: RequestTimeout = _LIMITS.request_timeout_s,
        keep_alive_timeout: KeepAlive = _LIMITS.keep_alive_s,
        shutdown_timeout: ShutdownTimeout = _LIMITS.shutdown_timeout_s,
        feature_log_window: FeatureLogWindow = FEATURE_LOG_WINDOW,
    ) -> None:
        """Serve predictions over HTTP and the request topic, hot-swapping model versions.

        Admin endpoints (promote, rollback, reject) are on only when the environment sets
        STREAMLEARN_SERVE_ADMIN_TOKEN (a bearer token; never a flag, so it stays out of
        the process list).
        """
        project = o.open_project(project_dir)
        unknown = [m for m in model or () if m not in project.model_catalog]
        if unknown:
            raise typer.BadParameter(
                f"expected models among {list(project.model_catalog.names)}, got {unknown}",
                param_hint="--model",
            )
        kafka = kafka_opts.config(
            "no broker: pass --bootstrap-servers (or STREAMLEARN_BOOTSTRAP_SERVERS), "
            "or run `streamlearn up`, which starts the embedded broker and serving"
        )
        topics = Topics(kafka.topic_prefix)
        main = [topics.features, topics.feature_log, topics.predictions, topics.prediction_requests]
        ensure_topics(kafka, [*main, topics.dlq(topics.prediction_requests)])
        ensure_topics(kafka, [topics.model_updates], partitions=1)
        root = data_dir(data)
        config = ServingConfig(
            host=host,
            port=port,
            project=project,
            models=tuple(model or project.model_catalog.names),
            registry_dir=root / "registry",
            kafka=kafka,
            state_dir=root / "serving",
            http=HttpLimits(
                max_connections=max_connections,
                max_body_bytes=max_body_bytes,
                max_header_bytes=max_header_bytes,
                request_timeout_s=request_timeout,
                keep_alive_s=keep_alive_timeout,
                shutdown_timeout_s=shutdown_timeout,
            ),
            admin_token=ServeSettings().admin_token,
            feature_log_window=feature_log_window,
        )
        stop = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping serving", signum)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        run_serving(config, stop)
