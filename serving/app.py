"""Wiring of the prediction service: replica, sessions, updates, topics and HTTP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from models.registry import FileRegistry
from serving.http import ServingHTTPServer
from serving.publish import KafkaSink
from serving.replica import FeatureReplica
from serving.requests import RequestConsumer
from serving.service import PredictionService
from serving.updates import ModelUpdater
from streams.config import KafkaConfig
from streams.feature_catalog import CATALOG, FeatureCatalog
from streams.kafka import make_producer
from streams.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """Everything the prediction service needs; built by the CLI or by tests.

    ``port`` 0 binds a free port (see :attr:`ServingApp.port`). The first of ``models``
    also answers the prediction-request topic.
    """

    registry_dir: Path
    kafka: KafkaConfig
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    models: tuple[str, ...] = ("feed",)
    registry_poll_s: float = 2.0
    #: The declared features served (tests extend the default).
    catalog: FeatureCatalog = CATALOG

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("expected at least one model to serve, got none")


class ServingApp:
    """The running service: ``start()``, then ``port``/``url``, then ``stop()``."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._server: ServingHTTPServer | None = None
        self._closers: list[Callable[[], object]] = []

    def start(self) -> ServingApp:
        """Start every part; returns once HTTP accepts connections.

        The HTTP port is bound before any thread starts, so a port in use fails fast;
        a part that fails to start stops the ones started before it.
        """
        cfg = self.config
        topics = Topics(cfg.kafka.topic_prefix)
        self.replica = FeatureReplica(cfg.kafka, cfg.state_dir, cfg.catalog)
        self._closers.append(self.replica.stop)
        try:
            self.service = PredictionService(
                FileRegistry(cfg.registry_dir), self.replica, cfg.models, catalog=cfg.catalog
            )
            server = self._server = ServingHTTPServer((cfg.host, cfg.port), self.service, None)
            self._closers.append(server.server_close)
            self.replica.start()
            self.sink = server.sink = KafkaSink(make_producer(cfg.kafka), topics)
            self._closers.append(self.sink.close)
            self.updater = ModelUpdater(self.service, cfg.kafka, cfg.registry_poll_s).start()
            self._closers.append(self.updater.stop)
            self.requests = RequestConsumer(self.service, self.sink, cfg.kafka, cfg.models[0])
            self._closers.append(self.requests.start().stop)
            self._closers.append(_serve_in_thread(server))
        except BaseException:
            self.stop()
            raise
        log.info("serving %s on http://%s:%d", list(cfg.models), cfg.host, self.port)
        return self

    @property
    def port(self) -> int:
        """The bound HTTP port."""
        if self._server is None:
            raise RuntimeError("expected a started ServingApp, got one not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.config.host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting requests, stop the consumers, flush the producer, drop the replica."""
        while self._closers:
            close = self._closers.pop()
            try:
                close()
            except Exception:
                log.exception("error while stopping serving")
        self._server = None

    def __enter__(self) -> ServingApp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _serve_in_thread(server: ServingHTTPServer) -> Callable[[], None]:
    """Run ``server`` in a thread; return the function that stops it."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http"
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=10.0)

    return stop


def run_serving(config: ServingConfig, stop_event: threading.Event | None = None) -> None:
    """Run the service until ``stop_event`` is set (forever when ``None``)."""
    stop = stop_event or threading.Event()
    app = ServingApp(config).start()
    try:
        stop.wait()
    finally:
        app.stop()
