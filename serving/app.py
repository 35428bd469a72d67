"""Wiring of the prediction service: replica, sessions, updates, topics and HTTP."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from pydantic import SecretStr

from streamlearn.models.registry import FileRegistry
from streamlearn.project import Project
from streamlearn.serving.http import build_api
from streamlearn.serving.replica import FeatureReplica
from streamlearn.serving.requests import RequestConsumer
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.serving.service import PredictionService
from streamlearn.serving.sink import FEATURE_LOG_WINDOW, KafkaSink
from streamlearn.serving.updates import ModelUpdater
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """Everything the prediction service needs; built by the CLI or by tests.

    ``project`` declares the surfaces, features and models; ``models`` are the ones served
    (empty: all of the project's). ``port`` 0 binds a free port (see
    :attr:`ServingApp.port`). The request topic is answered by the model each request is
    routed to (``streamlearn.serving.requests.route``).
    ``http`` holds the server's time-outs and caps; admin endpoints are on only with an
    ``admin_token``.
    """

    registry_dir: Path
    kafka: KafkaConfig
    state_dir: Path
    project: Project
    host: str = "127.0.0.1"
    port: int = 8080
    models: tuple[str, ...] = ()
    registry_poll_s: float = 2.0
    http: HttpLimits = field(default_factory=HttpLimits)
    admin_token: SecretStr | None = None
    #: feature-log records in flight at most: what a crash can lose (``serving.sink``)
    feature_log_window: int = FEATURE_LOG_WINDOW

    def __post_init__(self) -> None:
        if not self.models:
            object.__setattr__(self, "models", self.project.model_catalog.names)
        if not self.models:
            raise ValueError("expected at least one model to serve, got none")


class ServingApp:
    """The running service: ``start()``, then ``port``/``url``, then ``stop()``."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._server: HttpServer | None = None
        self._closers: list[Callable[[], object]] = []

    def start(self) -> ServingApp:
        """Start every part; returns once HTTP accepts connections.

        The HTTP port is bound before any thread starts, so a port in use fails fast;
        a part that fails to start stops the ones started before it.
        """
        cfg = self.config
        topics = Topics(cfg.kafka.topic_prefix)
        catalog = cfg.project.catalog
        self.replica = FeatureReplica(cfg.kafka, cfg.state_dir, catalog)
        self._closers.append(self.replica.stop)
        try:
            self.service = PredictionService(
                FileRegistry(cfg.registry_dir), self.replica, cfg.models, catalog
            )
            self.sink = KafkaSink(cfg.kafka, topics, cfg.feature_log_window)
            self._closers.append(self.sink.close)
            self.updater = ModelUpdater(self.service, cfg.kafka, cfg.registry_poll_s)
            api = build_api(
                self.service,
                self.sink,
                max_body_bytes=cfg.http.max_body_bytes,
                admin_token=cfg.admin_token,
                refresh=self.updater.check,
                announce=self.sink.announce,
                features=self.replica,
            )
            server = self._server = HttpServer(api, cfg.host, cfg.port, cfg.http)
            self.replica.start()
            self.updater.start()
            self._closers.append(self.updater.stop)
            self.requests = RequestConsumer(
                self.service, self.sink, cfg.kafka, cfg.project.model_catalog
            )
            self._closers.append(self.requests.start().stop)
            server.start()
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
        """Stop accepting requests and drain those in flight, stop the consumers, flush the
        producer, drop the replica."""
        if self._server is not None:
            self._server.stop()  # first: in-flight requests still need the service
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


#: The interpreter's thread switch interval in a serving process. Python's default, 5 ms,
#: lets a background thread running Python (the replica applying a batch of feature
#: records, the updater loading a version) keep the GIL that long while the event loop
#: waits to answer a request; at 1 ms it gets it back within a millisecond
#: (``streamlearn_event_loop_lag_seconds``).
SWITCH_INTERVAL_S: Final = 0.001


def run_serving(config: ServingConfig, stop_event: threading.Event | None = None) -> None:
    """Run the service until ``stop_event`` is set (forever when ``None``), in a process of
    its own (it sets the interpreter's thread switch interval: :data:`SWITCH_INTERVAL_S`)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = stop_event or threading.Event()
    app = ServingApp(config).start()
    # What start-up loaded (modules, sessions, the replica's restored rows) lives as long
    # as the process: a full collection would scan it again, holding the GIL for tens of
    # milliseconds while requests wait (seen as the loop's p99). Only what is made after
    # this is scanned.
    gc.freeze()
    try:
        stop.wait()
    finally:
        app.stop()
