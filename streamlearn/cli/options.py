"""Options shared by several commands (every flag also has a ``STREAMLEARN_…`` env var),
the Kafka flags as one value (:class:`KafkaOptions`), and the one parser of ``key=value``
flags (``--param``, ``--set``, ``--kafka-option``, sweep grids).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from streamlearn.cli.settings import KafkaSecurity, data_dir
from streamlearn.models.definition import ModelDef
from streamlearn.models.registry import FileRegistry
from streamlearn.models.rollout import RolloutConfig
from streamlearn.project import Project, load_project
from streamlearn.stack import address
from streamlearn.streams.errors import CatalogError
from streamlearn.streams.kafka.config import KafkaConfig

BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        envvar="STREAMLEARN_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers (host:port,…). Unset: the embedded broker `up` runs "
        "in the data directory (STREAMLEARN_DATA_DIR, else ./var), while it runs; `up` "
        "itself starts one.",
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
KafkaOptionFlags = Annotated[
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
Quiet = Annotated[
    bool,
    typer.Option("--quiet", envvar="STREAMLEARN_QUIET", help="No progress bar."),
]
Seed = Annotated[int, typer.Option("--seed", envvar="STREAMLEARN_SEED", help="Random seed.")]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size", envvar="STREAMLEARN_BATCH_SIZE", min=1, help="Examples per batch."
    ),
]
HashBits = Annotated[
    int,
    typer.Option(
        "--hash-bits",
        envvar="STREAMLEARN_HASH_BITS",
        min=1,
        max=30,
        help="Hashed feature space: 2**bits coordinates (inferred specs).",
    ),
]
Learner = Annotated[
    str | None,
    typer.Option(
        "--learner",
        envvar="STREAMLEARN_LEARNER",
        help="Learner name (streamlearn.models.zoo); default: the model definition's, else ftrl.",
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        envvar="STREAMLEARN_PARAM",
        help="Learner hyper-parameter key=value (repeatable; JSON values, else text), over "
        "the model definition's or the learner's defaults, e.g. alpha=0.1.",
    ),
]
SummaryJson = Annotated[
    Path | None,
    typer.Option(
        "--summary-json",
        envvar="STREAMLEARN_SUMMARY_JSON",
        help="Write the command's JSON summary here too.",
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="STREAMLEARN_MODEL",
        help="A model the project declares (`streamlearn models defs`); may be left out when "
        "it declares one.",
    ),
]
ProjectDir = Annotated[
    Path | None,
    typer.Option(
        "--project",
        envvar="STREAMLEARN_PROJECT",
        help="The project: a directory whose project.py declares its events, features and "
        "models (`streamlearn init DIR` writes one). Unset: the built-in example project.",
    ),
]


def open_project(path: Path | None) -> Project:
    """The project at ``path`` (``None``: the built-in example)."""
    return load_project(path)


def model_definition(project: Project, name: str | None) -> ModelDef:
    """The definition of model ``name`` (``None``: the project's only model); a
    ``--model`` usage error when there is no such model."""
    try:
        return project.model_catalog.only(name)
    except CatalogError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None


DEFAULT_PREFIX = "streamlearn."
DEFAULT_PARTITIONS = 4
DEFAULT_DATA_DIR = Path("var")


def open_registry(data: Path) -> FileRegistry:
    """The model registry under the ``--data-dir`` (created if missing)."""
    return FileRegistry(data_dir(data) / "registry")


_NO_BROKER = (
    "no broker: pass --bootstrap-servers (or STREAMLEARN_BOOTSTRAP_SERVERS), "
    "or run `streamlearn up`, which starts the embedded broker (found from this directory "
    "while it runs)"
)


# -- key=value flags -----------------------------------------------------------------------
def parse_pairs(pairs: Sequence[str] | None, flag: str = "--param") -> dict[str, str]:
    """``["a.b=1", "c=x"]`` → ``{"a.b": "1", "c": "x"}`` (keys and values stripped); a
    usage error naming ``flag`` on a pair without ``=`` or with an empty key."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint=flag)
        out[key.strip()] = value.strip()
    return out


def parse_value(text: str) -> Any:
    """A value from the command line: JSON when it parses (``0.1``, ``true``, ``[1, 2]``,
    ``null``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: Sequence[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["alpha=0.1", "topic=a,b"]`` → ``{"alpha": 0.1, "topic": "a,b"}`` (commas kept)."""
    return {k: parse_value(v) for k, v in parse_pairs(pairs, flag).items()}


def parse_grid(pairs: Sequence[str] | None, flag: str = "--param") -> dict[str, list[Any]]:
    """``["learner=ftrl,fm", "alpha=0.1,0.5"]`` → ``{"learner": [...], "alpha": [...]}``:
    each key once, at least one value each."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs or []:
        ((key, text),) = parse_pairs([pair], flag).items()
        if key in grid:
            raise typer.BadParameter(
                f"expected each grid param once, got {key!r} twice", param_hint=flag
            )
        values = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise typer.BadParameter(
                f"expected at least one value for grid param {key!r}, got {pair!r}", param_hint=flag
            )
        grid[key] = values
    return grid


# -- Kafka ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaOptions:
    """The Kafka flags of a command as one value (see :func:`kafka_options`)."""

    bootstrap_servers: str | None = None
    topic_prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS
    #: ``--kafka-option key=value`` pairs: librdkafka settings passed through.
    client_options: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        """Whether a broker was named."""
        return bool(self.bootstrap_servers)

    def config(self, missing: str = _NO_BROKER) -> KafkaConfig:
        """The ``KafkaConfig`` every component gets, security settings from the environment
        (:class:`~streamlearn.cli.settings.KafkaSecurity`) included; a usage error (``missing``)
        when no broker is named."""
        bootstrap = self.bootstrap_servers or address.running_broker(
            Path(os.environ.get("STREAMLEARN_DATA_DIR") or DEFAULT_DATA_DIR)
        )
        if not bootstrap:
            raise typer.BadParameter(missing)
        overrides: dict[str, Any] = KafkaSecurity().librdkafka()
        overrides.update(parse_pairs(self.client_options, "--kafka-option"))
        try:
            return KafkaConfig(
                bootstrap_servers=bootstrap,
                topic_prefix=self.topic_prefix,
                partitions=self.partitions,
                client_overrides=overrides,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None


F = TypeVar("F", bound=Callable[..., Any])


def kafka_options(partitions: bool = True) -> Callable[[F], F]:
    """Give a command the Kafka flags (``--bootstrap-servers``, ``--topic-prefix``,
    ``--partitions`` unless ``partitions=False``, ``--kafka-option``) in place of its
    ``kafka_opts: KafkaOptions`` parameter (first, without a default), which receives them
    as one value::

        @kafka_options()
        def replay_cmd(kafka_opts: KafkaOptions, topic: ..., quiet: Quiet = False) -> None:
            kafka = kafka_opts.config()
    """
    flags = [
        ("bootstrap_servers", BootstrapServers, None),
        ("topic_prefix", TopicPrefix, DEFAULT_PREFIX),
        *([("partitions", Partitions, DEFAULT_PARTITIONS)] if partitions else []),
        ("kafka_option", KafkaOptionFlags, None),
    ]

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "kafka_opts"]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
            for name, a, d in flags
        ]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            kafka = KafkaOptions(
                kwargs.pop("bootstrap_servers"),
                kwargs.pop("topic_prefix"),
                kwargs.pop("partitions", DEFAULT_PARTITIONS),
                tuple(kwargs.pop("kafka_option") or ()),
            )
            return command(kafka_opts=kafka, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return wrapper  # type: ignore[return-value]

    return decorate


#: The rollout thresholds by default (``streamlearn.models.rollout``).
DEFAULT_ROLLOUT = RolloutConfig()
RolloutMinExamples = Annotated[
    int,
    typer.Option(
        "--rollout-min-examples",
        envvar="STREAMLEARN_ROLLOUT_MIN_EXAMPLES",
        min=1,
        help="Labelled examples a candidate (scored as a shadow) and production must both "
        "have scored before the candidate is promoted or rejected.",
    ),
]
RolloutWatchExamples = Annotated[
    int,
    typer.Option(
        "--rollout-watch-examples",
        envvar="STREAMLEARN_ROLLOUT_WATCH_EXAMPLES",
        min=1,
        help="Labelled examples served by a promoted lineage before it is kept for good "
        "(a regression before that rolls it back).",
    ),
]
RolloutPromoteMargin = Annotated[
    float,
    typer.Option(
        "--rollout-promote-margin",
        envvar="STREAMLEARN_ROLLOUT_PROMOTE_MARGIN",
        help="Promote a candidate when its NE <= production's NE minus this.",
    ),
]
RolloutRollbackMargin = Annotated[
    float,
    typer.Option(
        "--rollout-rollback-margin",
        envvar="STREAMLEARN_ROLLOUT_ROLLBACK_MARGIN",
        help="Roll a promotion back when its served NE > production's NE in the comparison "
        "plus this.",
    ),
]
Rollout = Annotated[
    bool,
    typer.Option(
        "--rollout/--no-rollout",
        envvar="STREAMLEARN_ROLLOUT",
        help="Compare candidates with production and promote, reject or roll back automatically.",
    ),
]
