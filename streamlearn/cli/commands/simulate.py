"""``streamlearn simulate``: synthetic users drive serving and the activity topic."""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import start_http_server

from streamlearn.cli import options as o
from streamlearn.simulator import LoopOptions, SessionParams, Simulator, World
from streamlearn.simulator.example import example, surface_models
from streamlearn.simulator.scoring import parse_urls
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics

log = logging.getLogger(__name__)


def _opt(flag: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(flag, envvar=f"STREAMLEARN_SIMULATE_{env}", help=help_, **kw)


ServingUrls = Annotated[
    list[str] | None,
    _opt(
        "--serving-url",
        "SERVING_URL",
        "Base URL of serving; repeat it or separate URLs with commas to spread requests "
        "over replicas (failing over when one does not answer). "
        "[default: http://127.0.0.1:8080]",
    ),
]
Rate = Annotated[float, _opt("--rate", "RATE", "Target prediction requests per second.", min=0.1)]
Duration = Annotated[
    float | None, _opt("--duration", "DURATION", "Stop after this many seconds.", min=0)
]
MaxRequests = Annotated[
    int | None, _opt("--max-requests", "MAX_REQUESTS", "Stop after this many requests.", min=0)
]
Seed = Annotated[int, _opt("--seed", "SEED", "Seed of the world and the traffic.")]
Users = Annotated[int, _opt("--users", "USERS", "Number of users.", min=1)]
Items = Annotated[int, _opt("--items", "ITEMS", "Number of live feed items.", min=1)]
AdsFraction = Annotated[
    float,
    _opt(
        "--ads-fraction",
        "ADS_FRACTION",
        "Fraction of requests that ask the ads model to rank ads (0: feed only).",
        min=0.0,
        max=1.0,
    ),
]
AdsModel = Annotated[
    str | None,
    _opt("--ads-model", "ADS_MODEL", "Model of the second surface (default: the example's)."),
]
SessionRequests = Annotated[
    float,
    _opt(
        "--session-requests",
        "SESSION_REQUESTS",
        "Mean requests per user session (1: independent requests, no sessions).",
        min=1.0,
    ),
]
BadEventRate = Annotated[
    float,
    _opt(
        "--bad-event-rate",
        "BAD_EVENT_RATE",
        "Chance that an event is followed by a malformed one (exercises dead-lettering).",
        min=0.0,
        max=1.0,
    ),
]
DrainSeconds = Annotated[
    float,
    _opt(
        "--drain-seconds",
        "DRAIN_SECONDS",
        "On stop, keep publishing scheduled engagements for this long (rest: dropped).",
        min=0.0,
    ),
]
SummaryJson = Annotated[
    Path | None, _opt("--summary-json", "SUMMARY_JSON", "Write the final stats here (JSON).")
]


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: stop sending requests; a second one: abort the drain too."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: stopping the simulator", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def register(app: typer.Typer) -> None:
    """Add ``simulate``."""

    @app.command()
    @o.kafka_options()
    def simulate(
        kafka_opts: o.KafkaOptions,
        serving_url: ServingUrls = None,
        model: Annotated[
            str | None,
            _opt("--model", "MODEL", "Model of the first surface (default: the example's)."),
        ] = None,
        ads_model: AdsModel = None,
        ads_fraction: AdsFraction = 0.3,
        served: Annotated[
            list[str] | None,
            _opt(
                "--served",
                "SERVED",
                "A model serving serves (repeatable); the surface of a model not among them "
                "is not asked (default: both are).",
            ),
        ] = None,
        rate: Rate = 150.0,
        duration: Duration = None,
        max_requests: MaxRequests = None,
        seed: Seed = 7,
        users: Users = 2000,
        items: Items = 1000,
        session_requests: SessionRequests = 8.0,
        bad_event_rate: BadEventRate = 0.0,
        drain_seconds: DrainSeconds = 6.0,
        metrics_port: o.MetricsPort = 0,
        metrics_host: o.MetricsHost = "127.0.0.1",
        summary_json: SummaryJson = None,
    ) -> None:
        """Simulate users of the built-in example project: ask serving to rank, publish
        impressions and engagements (another project is fed by its own producers or
        `streamlearn produce --log`).

        Users come in sessions; feed items and ads have Zipf-like popularity; a share of
        the requests (--ads-fraction) asks the ads model. Runs until SIGINT/SIGTERM,
        --duration or --max-requests; logs progress every 10 s; the final stats (per
        surface, and the shape of the published log) go to stdout and --summary-json.
        """
        first, second = surface_models()
        model, ads_model = model or first, ads_model or second
        if served is not None and ads_model not in served:
            ads_fraction = 0.0
        kafka = kafka_opts.config()
        # httpx logs every request at INFO: 150 lines a second.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        topics = Topics(kafka.topic_prefix)
        ensure_loop_topics(kafka, topics, example().model_catalog.names)
        try:
            urls = parse_urls(serving_url or ["http://127.0.0.1:8080"])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--serving-url") from None
        if metrics_port:
            start_http_server(metrics_port, addr=metrics_host)
        sessions = (
            SessionParams(mean_requests=session_requests)
            if session_requests > 1
            else SessionParams(mean_requests=1.0, length_exponent=0.0, min_away_s=0.0)
        )
        sim = Simulator(
            World(seed, n_users=users, n_items=items),
            kafka,
            topics,
            urls,
            model=model,
            rate=rate,
            bad_event_rate=bad_event_rate,
            options=LoopOptions(drain_s=drain_seconds),
            ads_fraction=ads_fraction,
            ads_model=ads_model,
            sessions=sessions,
        )
        stop = threading.Event()
        _stop_on_signals(stop)
        # the world (users, items, their tastes) lives as long as the process: a full
        # collection scanning it again would show in the predict latency it measures
        gc.freeze()
        try:
            sim.run(max_seconds=duration, max_requests=max_requests, stop_event=stop)
        except KeyboardInterrupt:
            log.warning("simulator interrupted while draining")
        stats = sim.stats()
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(stats, indent=2) + "\n")
        typer.echo(json.dumps(stats))
