"""``streamlearn worker`` and ``streamlearn train``: run the stream processors.

Each processor's module is imported when it is built, so a worker process exports only
its own processor's metric families."""

from __future__ import annotations

import gc
import logging
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from prometheus_client import start_http_server

from streamlearn.cli import options as o
from streamlearn.cli.settings import data_dir
from streamlearn.models.definition import ModelDef
from streamlearn.models.extras import require
from streamlearn.models.registry import FileRegistry
from streamlearn.models.rollout import RolloutConfig
from streamlearn.models.zoo import DEFAULT_BATCH_SIZE, require_learner
from streamlearn.streams.kafka.clients import Cluster, KafkaCluster
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.runtime.processor import Processor, SnapshotProcessor

if TYPE_CHECKING:
    from streamlearn.streams.learning.ranks import RankConfig, RankGroup
    from streamlearn.streams.learning.trainer import OnlineTrainer

log = logging.getLogger(__name__)


class ProcessorName(StrEnum):
    """The processors a worker can run."""

    features = "features"
    joiner = "joiner"
    trainer = "trainer"


class RuntimeName(StrEnum):
    """The runtimes that run a processor."""

    microbatch = "microbatch"
    faust = "faust"


def _serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)


def _check_installed(runtime: RuntimeName, learner: str | None) -> None:
    """Fail before touching Kafka when the runtime or the learner needs a missing extra."""
    if runtime is RuntimeName.faust:
        require("faust", "--runtime faust")
    if learner is not None:
        require_learner(learner)


def run_processor(
    proc: Processor,
    kafka: KafkaConfig,
    runtime: RuntimeName,
    group_id: str,
    duration: float | None,
    batch_size: int = 2000,
    commit_interval_s: float = 1.0,
    assignment: tuple[tuple[str, int], ...] | None = None,
) -> None:
    """Run ``proc`` until SIGINT/SIGTERM or ``duration`` seconds.

    Raises when the run fails, including its final commit or snapshot on the way out,
    so the process exits non-zero (``streamlearn.cli.root.main``)."""
    rt: Any
    if runtime is RuntimeName.faust and isinstance(proc, SnapshotProcessor):
        # faust starts from its own committed offsets and cannot seek to a snapshot's, so
        # a restarted trainer would skip the examples learned after its last snapshot.
        raise typer.BadParameter(
            "the trainer runs on the micro-batch runtime only: its exactly-once resume seeks "
            "to the offsets of its last snapshot, which faust cannot do; got --runtime faust"
        )
    if runtime is RuntimeName.faust:
        from streamlearn.streams.runtime.faust_adapter import FaustRuntime

        rt = FaustRuntime(proc, kafka, group_id=group_id, batch_size=batch_size)
    else:
        rt = MicroBatchRuntime(
            proc,
            kafka,
            RuntimeConfig(
                group_id=group_id,
                batch_size=batch_size,
                commit_interval_s=commit_interval_s,
                assignment=assignment,
            ),
        )
        if hasattr(proc, "on_stop"):  # a trainer rank: a round may decide that all stop
            proc.on_stop = rt.stop

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping %s", signum, proc.name)
        rt.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # What is loaded by now (modules, compiled kernels) lives as long as the process: keep
    # the collector from scanning it again. A batch allocates tens of thousands of tracked
    # objects (messages, rows), most of them alive until the batch is done: collecting the
    # young generation every 50,000 allocations instead of 700 spares ~10% of a trainer's
    # time (bench/bench_trainer.py) and delays only the freeing of reference cycles.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stats = rt.run(max_seconds=duration)
    log.info("processor=%s stopped: %s", proc.name, stats)


Duration = Annotated[
    float | None,
    typer.Option("--duration", envvar="STREAMLEARN_DURATION", help="Stop after this many seconds."),
]
Runtime = Annotated[
    RuntimeName,
    typer.Option(
        "--runtime", envvar="STREAMLEARN_RUNTIME", help="Which runtime runs the processor."
    ),
]
WindowS = Annotated[
    float,
    typer.Option(
        "--label-window", envvar="STREAMLEARN_LABEL_WINDOW", help="Label window, seconds."
    ),
]
PublishInterval = Annotated[
    float,
    typer.Option(
        "--publish-interval",
        envvar="STREAMLEARN_PUBLISH_INTERVAL",
        min=0.0,
        help="Trainer: seconds between serving-only versions (the graph without the "
        "learner state) published between snapshots; 0: snapshots only.",
    ),
]
KeepVersions = Annotated[
    int,
    typer.Option(
        "--keep-versions",
        envvar="STREAMLEARN_KEEP_VERSIONS",
        min=0,
        help="Trainer: keep the newest this many versions in the registry (and the newest "
        "resume points and every staged version); 0 keeps every version.",
    ),
]
PositivesAtOnce = Annotated[
    bool,
    typer.Option(
        "--positives-at-once/--positives-at-close",
        envvar="STREAMLEARN_POSITIVES_AT_ONCE",
        help="Joiner: emit a positive example as soon as its engagement is in (negatives "
        "wait for the label window), or every example when the window closes.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``worker`` and ``train``."""

    @app.command()
    @o.kafka_options()
    def worker(
        kafka_opts: o.KafkaOptions,
        processor: Annotated[ProcessorName, typer.Argument(help="Which processor to run.")],
        runtime: Runtime = RuntimeName.microbatch,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        metrics_port: o.MetricsPort = 0,
        metrics_host: o.MetricsHost = "127.0.0.1",
        label_window: WindowS = 8.0,
        model: o.Model = None,
        project_dir: o.ProjectDir = None,
        positives_at_once: PositivesAtOnce = True,
        commit_interval: Annotated[
            float,
            typer.Option(
                "--commit-interval",
                envvar="STREAMLEARN_COMMIT_INTERVAL",
                min=0.0,
                help="Seconds between commits of state, offsets and outputs (0: every batch; "
                "the trainer always commits every batch).",
            ),
        ] = 1.0,
        worker_id: Annotated[
            str | None,
            typer.Option(
                "--worker-id",
                envvar="STREAMLEARN_WORKER_ID",
                help="Name of this worker when several share a processor's consumer group: "
                "its stores live under <data-dir>/state/<worker-id>.",
            ),
        ] = None,
        duration: Duration = None,
    ) -> None:
        """Run a stream processor (features, joiner, trainer) on a runtime.

        Several workers of one processor split its partitions (one consumer group); a
        partition that moves to a worker without its store is restored from the changelog.
        """
        project = o.open_project(project_dir)
        trained = processor is ProcessorName.trainer
        _check_installed(runtime, o.model_definition(project, model).learner if trained else None)
        kafka = kafka_opts.config()
        topics = Topics(kafka.topic_prefix)
        ensure_loop_topics(kafka, topics, project.model_catalog.names)
        root = data_dir(data)
        _serve_metrics(metrics_port, metrics_host)
        cluster = KafkaCluster(kafka)
        state = root / "state" / worker_id if worker_id else root / "state"
        proc: Processor
        group = f"{kafka.topic_prefix}{processor.value}"
        if processor is ProcessorName.features:
            from streamlearn.streams.features.processor import FeatureProcessor

            proc = FeatureProcessor(topics, state, project.catalog, cluster=cluster)
        elif processor is ProcessorName.joiner:
            from streamlearn.streams.learning.joiner import Joiner, JoinerConfig

            config = JoinerConfig(window_s=label_window, positives_at_once=positives_at_once)
            proc = Joiner(topics, state, project.catalog, project.model_catalog, config, cluster)
        else:
            definition = o.model_definition(project, model)
            proc = _trainer(topics, root, definition, None, [], 10.0, cluster=cluster)
            group = f"{kafka.topic_prefix}trainer.{definition.name}"
        interval = 0.0 if processor is ProcessorName.trainer else commit_interval
        run_processor(proc, kafka, runtime, group, duration, commit_interval_s=interval)

    @app.command()
    @o.kafka_options()
    def train(
        kafka_opts: o.KafkaOptions,
        model: o.Model = None,
        project_dir: o.ProjectDir = None,
        learner: o.Learner = None,
        param: o.Params = None,
        snapshot_interval: Annotated[
            float,
            typer.Option(
                "--snapshot-interval",
                envvar="STREAMLEARN_SNAPSHOT_INTERVAL",
                help="Seconds between full snapshots (with the learner state: resume points).",
            ),
        ] = 10.0,
        batch_size: o.BatchSize = DEFAULT_BATCH_SIZE,
        flush_after: Annotated[
            float,
            typer.Option(
                "--flush-after",
                envvar="STREAMLEARN_FLUSH_AFTER",
                help="Learn a partial micro-batch after this many idle seconds.",
            ),
        ] = 1.0,
        publish_interval: PublishInterval = 1.0,
        keep_versions: KeepVersions = 30,
        runtime: Runtime = RuntimeName.microbatch,
        data: o.DataDir = o.DEFAULT_DATA_DIR,
        metrics_port: o.MetricsPort = 0,
        metrics_host: o.MetricsHost = "127.0.0.1",
        duration: Duration = None,
        rollout: o.Rollout = True,
        rollout_min_examples: o.RolloutMinExamples = o.DEFAULT_ROLLOUT.min_examples,
        rollout_promote_margin: o.RolloutPromoteMargin = o.DEFAULT_ROLLOUT.promote_margin,
        rollout_watch_examples: o.RolloutWatchExamples = o.DEFAULT_ROLLOUT.watch_examples,
        rollout_rollback_margin: o.RolloutRollbackMargin = o.DEFAULT_ROLLOUT.rollback_margin,
        ranks: Annotated[
            int,
            typer.Option(
                "--ranks",
                envvar="STREAMLEARN_RANKS",
                min=1,
                help="Train the model with this many processes (ranks) kept in step over "
                "torch.distributed; each reads its share of the topic's partitions. Without "
                "--rank this command starts and supervises them all (the 'ranks' extra).",
            ),
        ] = 1,
        rank: Annotated[
            int | None,
            typer.Option(
                "--rank",
                envvar="STREAMLEARN_RANK",
                min=0,
                help="Run only this rank (0 … --ranks - 1), e.g. one per host; rank 0 serves "
                "the rendezvous and publishes.",
            ),
        ] = None,
        rendezvous: Annotated[
            str | None,
            typer.Option(
                "--rendezvous",
                envvar="STREAMLEARN_RENDEZVOUS",
                help="HOST:PORT where rank 0 meets the others (default 127.0.0.1:29400; "
                "without --rank, a free port on 127.0.0.1).",
            ),
        ] = None,
        rank_bind: Annotated[
            str,
            typer.Option(
                "--rank-bind",
                envvar="STREAMLEARN_RANK_BIND",
                help="The address this rank's connections to the others bind (its host's "
                "address on the ranks' network when they span hosts).",
            ),
        ] = "127.0.0.1",
        rank_timeout: Annotated[
            float,
            typer.Option(
                "--rank-timeout",
                envvar="STREAMLEARN_RANK_TIMEOUT",
                min=1.0,
                help="Seconds a round waits for a silent rank before every rank stops and "
                "restarts from the last snapshot.",
            ),
        ] = 30.0,
        sync_interval: Annotated[
            float,
            typer.Option(
                "--sync-interval",
                envvar="STREAMLEARN_SYNC_INTERVAL",
                min=0.01,
                help="Seconds between the ranks' sync rounds (model deltas summed, offsets "
                "reported; snapshots are taken at rounds).",
            ),
        ] = 0.5,
        sync_every: Annotated[
            int,
            typer.Option(
                "--sync-every",
                envvar="STREAMLEARN_SYNC_EVERY",
                min=1,
                help="A sync round after this many examples learned by a rank (or "
                "--sync-interval seconds, whichever comes first): fewer examples keep the "
                "ranks' copies closer (AUC), more spend less time in rounds.",
            ),
        ] = 4096,
    ) -> None:
        """Train a model online from its training-examples topic, publishing snapshots;
        compare candidates with production and roll them out (the docs: Rollout). With
        --ranks N, N processes learn the model together (the docs: Ranks)."""
        if rank is not None and rank >= ranks:
            raise typer.BadParameter(f"expected a rank below --ranks {ranks}, got {rank}")
        project = o.open_project(project_dir)
        definition = o.model_definition(project, model)
        if ranks > 1 and rank is None:
            _launch_ranks(ranks, rendezvous, metrics_port, duration)
            return
        _check_installed(runtime, learner or definition.learner)
        kafka = kafka_opts.config()
        topics = Topics(kafka.topic_prefix)
        ensure_loop_topics(kafka, topics, project.model_catalog.names)
        root = data_dir(data)
        _serve_metrics(metrics_port, metrics_host)
        group_of_ranks = None
        if ranks > 1:  # meet the other ranks (blocks until all have, or the time-out)
            from streamlearn.streams.learning.ranks import RankConfig

            assert rank is not None
            group_of_ranks = _rank_group(
                RankConfig(
                    rank,
                    ranks,
                    *_host_port(rendezvous or "127.0.0.1:29400"),
                    bind=rank_bind,
                    timeout_s=rank_timeout,
                    sync_every=sync_every,
                    sync_interval_s=sync_interval,
                )
            )
        proc = _trainer(
            topics,
            root,
            definition,
            learner,
            param,
            snapshot_interval,
            batch_size,
            flush_after,
            cluster=KafkaCluster(kafka),
            publish_interval=publish_interval,
            keep_versions=keep_versions,
            rollout=RolloutConfig(
                enabled=rollout,
                min_examples=rollout_min_examples,
                promote_margin=rollout_promote_margin,
                watch_examples=rollout_watch_examples,
                rollback_margin=rollout_rollback_margin,
            ),
            ranks=group_of_ranks,
        )
        # The trainer's checkpoint is its snapshot: commit every batch (nothing to coalesce,
        # and a rewind would re-learn examples already in the learner).
        group = f"{kafka.topic_prefix}trainer.{definition.name}"
        assignment = None
        consume = 10_000
        if group_of_ranks is not None:
            group = f"{group}.rank{group_of_ranks.config.rank}"
            assignment = _rank_assignment(kafka, topics, definition.name, group_of_ranks.config)
            consume = min(consume, sync_every)  # a round waits for the batch to end
        run_processor(
            proc,
            kafka,
            runtime,
            group,
            duration,
            consume,
            commit_interval_s=0.0,
            assignment=assignment,
        )


def _launch_ranks(
    ranks: int, rendezvous: str | None, metrics_port: int, duration: float | None
) -> None:
    """``train --ranks N`` without ``--rank``: run and supervise the N ranks."""
    import sys

    from streamlearn.models.extras import require
    from streamlearn.stack.ranks import RankLauncher

    require("ranks", "training with several ranks")
    host, port = _host_port(rendezvous) if rendezvous else ("127.0.0.1", None)
    launcher = RankLauncher(
        [sys.executable, "-m", "streamlearn", *sys.argv[1:]],
        ranks,
        host=host,
        port=port,
        metrics_port=metrics_port,
    )

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping the %d ranks", signum, ranks)
        launcher.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = launcher.run()
    if code:
        raise typer.Exit(code)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--rendezvous")
    return host, int(port)


def _rank_assignment(
    kafka: KafkaConfig, topics: Topics, model: str, config: RankConfig
) -> tuple[tuple[str, int], ...]:
    """The partitions of ``training-examples.<model>`` that a rank reads."""
    from streamlearn.streams.learning.ranks import rank_partitions

    topic = topics.training_examples(model)
    count = KafkaCluster(kafka).partition_counts([topic])[topic]
    try:
        return tuple((topic, p) for p in rank_partitions(count, config.rank, config.world))
    except ValueError as exc:
        raise typer.BadParameter(f"topic={topic}: {exc}", param_hint="--ranks") from None


def _rank_group(config: RankConfig) -> RankGroup:
    """Meet the other ranks (blocks until all have, or the time-out)."""
    from streamlearn.streams.learning.ranks import RankGroup

    log.info(
        "rank %d of %d: meeting the others at %s:%d",
        config.rank,
        config.world,
        config.address,
        config.port,
    )
    return RankGroup(config)


def _trainer(
    topics: Topics,
    root: Path,
    definition: ModelDef,
    learner: str | None,
    params: list[str] | None,
    snapshot_interval: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    flush_after: float = 1.0,
    cluster: Cluster | None = None,
    publish_interval: float = 1.0,
    keep_versions: int = 30,
    rollout: RolloutConfig | None = None,
    ranks: RankGroup | None = None,
) -> OnlineTrainer:
    from streamlearn.streams.learning.trainer import OnlineTrainer, TrainerConfig

    cfg = TrainerConfig(
        definition=definition.with_learner(learner, o.parse_params(params)),
        snapshot_interval_s=snapshot_interval,
        publish_interval_s=publish_interval or None,
        keep_versions=keep_versions,
        batch_size=batch_size,
        flush_after_s=flush_after,
        rollout=rollout or RolloutConfig(),
    )
    return OnlineTrainer(topics, FileRegistry(root / "registry"), cfg, cluster=cluster, ranks=ranks)
