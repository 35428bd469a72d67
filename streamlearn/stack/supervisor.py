"""``streamlearn up``: the whole loop as supervised processes on one machine.

Starts the embedded broker (unless ``--bootstrap-servers`` names a cluster), creates the topics,
then runs the feature processor, joiner, one online trainer per model of the project
(``trainer-<model>``), serving (every model) and what drives the loop (the simulator for the
built-in example, the producer of ``--log``) as separate processes. A child that dies is reported
and restarted. A live view shows the loop; at the end (Ctrl-C or ``--duration``) everything stops in
order (simulator first, then the processors once they have caught up) and a summary is written.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.metrics_core import Metric

from streamlearn.models.extras import require
from streamlearn.models.freshness import STAGES as FRESHNESS_STAGES
from streamlearn.models.registry import FileRegistry
from streamlearn.models.rollout import RolloutConfig
from streamlearn.models.stages import describe, history
from streamlearn.models.zoo import require_learner
from streamlearn.project import Project, is_builtin, load_project
from streamlearn.stack import address
from streamlearn.stack.committed import Committed
from streamlearn.stack.metrics_file import MetricsFile
from streamlearn.stack.scrape import (
    Samples,
    histogram_mean,
    histogram_quantile,
    quantile,
    samples_of,
    scrape_families,
    total,
    value,
)
from streamlearn.streams.kafka.broker import EmbeddedBroker, die_with_parent, free_port
from streamlearn.streams.kafka.clients import KafkaCluster
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    """What ``up`` runs."""

    data_dir: Path
    bootstrap_servers: str | None = None
    topic_prefix: str = "streamlearn."
    partitions: int = 4
    kafka_options: tuple[str, ...] = ()
    duration_s: float | None = None
    rate: float = 150.0
    seed: int = 7
    snapshot_interval_s: float = 10.0
    #: serving-only versions between snapshots (0: none)
    publish_interval_s: float = 1.0
    label_window_s: float = 8.0
    #: the joiner emits positives at once (negatives wait for the window)
    positives_at_once: bool = True
    serving_port: int = 0
    runtime: str = "microbatch"
    #: write every process's metrics over the run here (OpenMetrics, see ``metrics_file``)
    metrics_file: Path | None = None
    metrics_interval_s: float = 5.0
    #: the project run (``None``: the built-in example, fed by the simulator)
    project_dir: Path | None = None
    #: a historical log published as the project's events (instead of the simulator)
    log: Path | None = None
    #: the log's pace: this many times real time by its time column (0: as fast as possible)
    log_speed: float = 0.0
    log_time_column: str = "ts"
    #: the models trained (one trainer each) and served (empty: all of the project's)
    models: tuple[str, ...] = ()
    #: feature processors and joiners, each in its processor's consumer group
    workers: int = 1
    #: serving processes; the simulator spreads requests over all of them
    serving_replicas: int = 1
    #: processes training each model together (``streamlearn train --ranks``)
    trainer_ranks: int = 1
    #: labelled examples before a candidate is decided / a promotion is kept
    rollout_min_examples: int = RolloutConfig().min_examples
    rollout_watch_examples: int = RolloutConfig().watch_examples


def trainer_name(model: str) -> str:
    """The supervised process that trains ``model``."""
    return f"trainer-{model}"


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    metrics_port: int
    env: dict[str, str]
    log_path: Path
    #: Scheduling niceness: the stream processors yield the CPU to serving and the
    #: simulator, whose latency is what users see (2 cores are shared by everything).
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    #: counters accumulated over earlier incarnations (a restart resets a process's counters)
    carried: Samples = field(default_factory=dict)
    last: Samples = field(default_factory=dict)
    #: the last scrape's families (with the names that have no samples yet)
    families: list[Metric] = field(default_factory=list)
    #: whether ``families`` were scraped since the metrics file last recorded them
    fresh: bool = False

    def start(self) -> None:
        """Start (or restart) the process; its pid goes to ``<data>/run/<name>.pid``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            out.close()
        self.started_at = time.monotonic()
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)
            except OSError as exc:
                log.warning("could not renice %s: %s", self.name, exc)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(str(self.proc.pid))

    @property
    def pid_path(self) -> Path:
        """Where the current pid is written (for operators and tests)."""
        return self.log_path.parent.parent / "run" / f"{self.name}.pid"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def refresh(self) -> None:
        """Scrape the process's metrics; the previous ones stay when it does not answer."""
        if not self.metrics_port:
            return  # a process without metrics (the log's producer)
        families = scrape_families(self.metrics_port)
        if families:
            self.families = families
            self.last = samples_of(families)
            self.fresh = True

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout_s)
            self.proc.kill()
            self.proc.wait()


#: How long the processed count must stand still before the stop (> 1 s commit interval).
_QUIET_S = 3.0
#: The per-model counts that must stand still before `up` stops the processors.
_DRAINED = ("examples_emitted", "examples_trained")

#: Counters that survive a child's restart in the summary (summed across incarnations).
#: The stream processors' figures come from their committed state instead (``committed``).
_CARRIED = (
    "streamlearn_dlq_events_total",
    "streamlearn_predictions_total",
)
#: The store processors, whose committed counts the figures are read from.
_STORE_ROLES = ("features", "joiner")
#: The first model's figures that the summary also gives at its top level (the keys it
#: had when there was one model).
_TOP_LEVEL_MODEL_KEYS = (
    "examples_trained",
    "examples_trained_live",
    "progressive_auc",
    "progressive_logloss",
    "progressive_ne",
    "ctr_model",
    "ctr_model_expected",
    "ctr_random",
    "ctr_oracle",
)


class Stack:
    """Runs and watches the children; knows how to read the loop's figures."""

    def __init__(self, config: StackConfig) -> None:
        # a child without its extra would only fail in its log: fail here, before anything
        if config.runtime == "faust":
            require("faust", "--runtime faust")
        self.config = config
        self.project: Project = load_project(config.project_dir)
        #: the models trained and served
        self.models = config.models or self.project.model_catalog.names
        for model in self.models:
            require_learner(self.project.model_catalog.get(model).learner)
        #: what drives the loop: the simulator (the built-in example), the log, or nothing
        self.source: str | None = (
            "producer"
            if config.log is not None
            else ("simulator" if is_builtin(self.project) else None)
        )
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}
        self.events: list[str] = []
        #: the source (simulator, producer) ended on its own (a bounded run, the whole log)
        self._source_done = False
        self.started = time.monotonic()
        self.first_prediction_s: float | None = None
        if not config.bootstrap_servers:
            self._archive_previous_run()
        self.registry = FileRegistry(config.data_dir / "registry")
        #: the stream processors' committed counts (events processed, dead letters,
        #: examples emitted), and the ids of the topics their stores must be built from
        self.committed = Committed()
        self.topic_ids: dict[str, str] = {}
        self.metrics_file = (
            MetricsFile(config.metrics_file, config.metrics_interval_s)
            if config.metrics_file
            else None
        )

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = cfg.bootstrap_servers
        self.source_summary_path.unlink(missing_ok=True)
        if not bootstrap:
            self.broker = EmbeddedBroker(log_path=cfg.data_dir / "logs" / "broker.log")
            (cfg.data_dir / "logs").mkdir(parents=True, exist_ok=True)
            self.broker.start()
            bootstrap = self.broker.bootstrap_servers
            self.broker.renice(5)  # batch traffic; serving's latency comes first
            address.write(cfg.data_dir, bootstrap)  # for commands run beside `up`
            self.note(f"embedded broker at {bootstrap}")
        kafka = KafkaConfig(bootstrap, cfg.topic_prefix, cfg.partitions)
        topics = Topics(cfg.topic_prefix)
        ensure_loop_topics(kafka, topics, self.project.model_catalog.names)
        self.topic_ids = KafkaCluster(kafka).topic_ids(
            [topics.activity, topics.features, topics.feature_log, topics.joiner_changelog]
        )
        # Children get the stack's settings, not `up`'s own flags (STREAMLEARN_DURATION,
        # STREAMLEARN_SUMMARY_JSON, … would otherwise leak into them); security settings
        # and the log level pass through.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("STREAMLEARN_")
            or k.startswith("STREAMLEARN_KAFKA_")
            or k == "STREAMLEARN_LOG_LEVEL"
        }
        env.update(
            STREAMLEARN_BOOTSTRAP_SERVERS=bootstrap,
            STREAMLEARN_TOPIC_PREFIX=cfg.topic_prefix,
            STREAMLEARN_PARTITIONS=str(cfg.partitions),
            STREAMLEARN_DATA_DIR=str(cfg.data_dir),
            PYTHONUNBUFFERED="1",
        )
        if cfg.kafka_options:
            env["STREAMLEARN_KAFKA_OPTIONS"] = " ".join(cfg.kafka_options)
        if cfg.project_dir is not None and self.project.root is not None:
            env["STREAMLEARN_PROJECT"] = str(self.project.root)
        serving_ports = [cfg.serving_port or free_port()] + [
            free_port() for _ in range(cfg.serving_replicas - 1)
        ]
        self.serving_port = serving_ports[0]
        py = [sys.executable, "-m", "streamlearn"]
        specs: list[tuple[str, list[str], int]] = []
        for i in range(1, cfg.workers + 1):
            # one worker keeps the state's usual place; several get one directory each
            ids = ["--worker-id", f"w{i}"] if cfg.workers > 1 else []
            for role, args in (
                ("features", ["worker", "features", "--runtime", cfg.runtime, *ids]),
                (
                    "joiner",
                    [
                        "worker",
                        "joiner",
                        "--runtime",
                        cfg.runtime,
                        "--label-window",
                        str(cfg.label_window_s),
                        "--positives-at-once" if cfg.positives_at_once else "--positives-at-close",
                        *ids,
                    ],
                ),
            ):
                port = free_port()
                name = _member(role, i, cfg.workers)
                specs.append((name, [*py, *args, "--metrics-port", str(port)], port))
        for model in self.models:
            port = free_port()
            args = [
                "train",  # always micro-batch: see `streamlearn train --help`
                "--model",
                model,
                "--snapshot-interval",
                str(cfg.snapshot_interval_s),
                "--publish-interval",
                str(cfg.publish_interval_s),
                "--rollout-min-examples",
                str(cfg.rollout_min_examples),
                "--rollout-watch-examples",
                str(cfg.rollout_watch_examples),
                *(("--ranks", str(cfg.trainer_ranks)) if cfg.trainer_ranks > 1 else ()),
            ]
            specs.append((trainer_name(model), [*py, *args, "--metrics-port", str(port)], port))
        served = [a for m in self.models for a in ("--model", m)]
        for i, sport in enumerate(serving_ports, 1):
            name = _member("serving", i, cfg.serving_replicas)
            specs.append((name, [*py, "serve", "--port", str(sport), *served], sport))
        if self.source == "simulator":
            specs.append(self._simulator(py, serving_ports))
        elif self.source == "producer":
            assert cfg.log is not None
            specs.append(
                (
                    "producer",
                    [
                        *py,
                        "produce",
                        "--log",
                        str(cfg.log.resolve()),
                        "--speed",
                        str(cfg.log_speed),
                        "--time-column",
                        cfg.log_time_column,
                        "--summary-json",
                        str(self.source_summary_path),
                        "--quiet",
                    ],
                    0,
                )
            )
        else:
            self.note(
                f"no simulator for project {self.project.name!r}: publish its events to "
                f"{Topics(cfg.topic_prefix).activity} (or pass --log FILE)"
            )
        for name, argv, port in specs:
            nice = 0 if _role(name) in ("serving", "simulator") else 10
            child = Child(name, argv, port, env, cfg.data_dir / "logs" / f"{name}.log", nice)
            child.start()
            self.children[name] = child
        self.note("started " + ", ".join(self.children))

    def _simulator(self, py: list[str], serving_ports: list[int]) -> tuple[str, list[str], int]:
        """The simulator of the built-in example, asking every serving replica."""
        cfg = self.config
        port = free_port()
        urls = [a for p in serving_ports for a in ("--serving-url", f"http://127.0.0.1:{p}")]
        argv = [
            *py,
            "simulate",
            *urls,
            "--rate",
            str(cfg.rate),
            "--seed",
            str(cfg.seed),
            "--metrics-port",
            str(port),
            "--summary-json",
            str(self.source_summary_path),
            *(a for m in self.models for a in ("--served", m)),
        ]
        return "simulator", argv, port

    def _archive_previous_run(self) -> None:
        """The embedded broker starts empty, so state stores and snapshots of an earlier
        run (whose offsets point into a broker that is gone) are moved aside."""
        old = [self.config.data_dir / d for d in ("state", "registry", "serving")]
        old = [d for d in old if d.exists()]
        if not old:
            return
        dest = self.config.data_dir / "archive" / time.strftime("%Y%m%d-%H%M%S")
        dest.mkdir(parents=True, exist_ok=True)
        for d in old:
            d.rename(dest / d.name)
        self.note(f"embedded broker starts empty: moved the previous run's data to {dest}")

    def note(self, text: str) -> None:
        stamp = time.monotonic() - self.started
        self.events.append(f"[{stamp:6.1f}s] {text}")
        log.info(text)

    # -- watch -----------------------------------------------------------------------------
    def poll(self) -> None:
        """Restart dead children; refresh every child's metrics."""
        for child in self.children.values():
            alive = child.alive
            if (
                not alive
                and child.name == self.source
                and child.proc is not None
                and child.proc.returncode == 0
            ):  # finished a bounded run, or the whole log
                if not self._source_done:
                    self._source_done = True
                    what = "the whole log published" if self.source == "producer" else "done"
                    self.note(f"{child.name} finished: {what}")
                continue
            if not alive and child.proc is not None:
                code = child.proc.returncode
                self.note(f"{child.name} exited with {code}; restarting (see {child.log_path})")
                for name in _CARRIED:
                    child.carried.setdefault(name, []).extend(child.last.get(name, []))
                child.last, child.families = {}, []
                child.restarts += 1
                child.start()
                continue
            self._refresh(child)
        self._record_metrics()
        if self.first_prediction_s is None and self.counter(
            "serving", "streamlearn_predictions_total"
        ):
            self.first_prediction_s = time.monotonic() - self.started
            self.note(f"first prediction served after {self.first_prediction_s:.1f}s")

    def _refresh(self, child: Child) -> None:
        child.refresh()
        if _role(child.name) in _STORE_ROLES:
            self.committed.observe(_role(child.name), child.last)

    def read_committed_stores(self) -> None:
        """Once the processors have stopped: their committed counts from their stores on
        disk (what they committed after the last scrape included)."""
        on_disk = Committed.from_stores(
            self.config.data_dir / "state", _STORE_ROLES, self.topic_ids
        )
        self.committed.merge(on_disk)

    def dead_letters(self) -> int:
        """Records dead-lettered: committed by the store processors, derived from each
        trainer's last version (the records its offsets passed that it neither learned
        nor dropped as duplicates), counted by the other processes."""
        topics = Topics(self.config.topic_prefix)
        n = self.committed.total("features", topics.activity, "dead_lettered")
        n += self.committed.total("joiner", topics.feature_log, "dead_lettered")
        for model in self.models:
            latest = self.registry.latest(model)
            if latest is not None and "offsets" in latest.metadata:
                meta = latest.metadata
                passed = sum(int(v) for v in meta["offsets"].values())
                learned = int(meta.get("examples_seen", 0))
                n += max(0, passed - learned - int(meta.get("duplicates_dropped", 0)))
        trainers = {trainer_name(m) for m in self.models}
        others = {_role(c) for c in self.children} - {*_STORE_ROLES, *trainers}
        return n + int(sum(self.counter(r, "streamlearn_dlq_events_total") for r in others))

    def members(self, role: str) -> list[Child]:
        """The children of one role (``features``: ``features`` or ``features-1``, …)."""
        return [c for n, c in self.children.items() if _role(n) == role]

    def counter(self, role: str, name: str, **labels: str) -> float:
        """A counter summed over a role's children and their earlier incarnations."""
        return sum(
            total(c.carried, name, **labels) + total(c.last, name, **labels)
            for c in self.members(role)
        )

    def gauge(self, role: str, name: str, **labels: str) -> float | None:
        """A gauge of a role's first child that has it."""
        for c in self.members(role):
            v = value(c.last, name, **labels)
            if v is not None:
                return v
        return None

    def p99_ms(self, role: str, name: str, **labels: str) -> float | None:
        """The highest p99 of a histogram over a role's children, in milliseconds."""
        found = [q for c in self.members(role) if (q := quantile(c.last, name, 0.99, **labels))]
        return _ms(max(found)) if found else None

    # -- figures -----------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The run's figures: the loop's, the first model's at the top level as before
        there were several, and every model's under ``models``."""
        topics = Topics(self.config.topic_prefix)
        source = self.children.get(self.source or "")
        sim = source.last if source is not None and self.source == "simulator" else {}
        final = self.source_summary()
        p99 = value(sim, "streamlearn_simulator_predict_latency_p99_seconds")
        models = {m: self.model_figures(m, final) for m in self.models}
        first = models[self.models[0]] if models else {}
        figures: dict[str, Any] = {
            "project": self.project.name,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "events_produced": int(total(sim, "streamlearn_simulator_events_produced_total")),
            # from the feature processors' committed state: a kill loses none of it
            "events_processed": self.committed.total("features", topics.activity, "applied"),
            "model_versions": first.get("versions", 0),
            "model_version": first.get("model_version"),
            **{k: first.get(k) for k in _TOP_LEVEL_MODEL_KEYS},
            "predictions_served": int(self.counter("serving", "streamlearn_predictions_total")),
            "predict_p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "serve_p99_ms": self.p99_ms("serving", "streamlearn_predict_latency_seconds"),
            "dlq_events": self.dead_letters(),
            "first_prediction_s": (
                None if self.first_prediction_s is None else round(self.first_prediction_s, 1)
            ),
            "restarts": {n: c.restarts for n, c in self.children.items() if c.restarts},
            "predictions_by_replica": {
                c.name: int(
                    total(c.carried, "streamlearn_predictions_total")
                    + total(c.last, "streamlearn_predictions_total")
                )
                for c in self.members("serving")
            },
            "models": models,
        }
        figures.update(self.freshness())  # over every model
        if final:
            # the source's own end-of-run figures are exact; the scrape may be stale
            for key in ("events_produced", "predict_p99_ms"):
                if final.get(key) is not None:
                    figures[key] = final[key]
            if figures["predict_p99_ms"] is not None:
                figures["predict_p99_ms"] = round(float(figures["predict_p99_ms"]), 2)
            # per surface and the shape of the published log
            for key in ("surfaces", "log_shape"):
                if key in final:
                    figures[f"simulator_{key}"] = final[key]
        return figures

    def model_figures(self, model: str, final: dict[str, Any]) -> dict[str, Any]:
        """One model's figures: versions, its trainer's live metrics, predictions served,
        and the CTR of the surface it ranks (model, random, oracle)."""
        trainer = trainer_name(model)
        latest = self.registry.latest(model)
        meta = latest.metadata if latest else {}
        serving = self.gauge("serving", "streamlearn_serving_model_version", model=model)
        auc_live = self.gauge(trainer, "streamlearn_progressive_metric", metric="auc")
        catalog = self.project.model_catalog
        surface = next(iter(catalog.get(model).surfaces), model) if model in catalog else model
        source = self.children.get("simulator")
        sim = source.last if source is not None else {}
        out: dict[str, Any] = {
            # numbered from 1 without gaps; retention deletes old ones from the registry
            "versions": latest.version if latest else 0,
            "model_version": latest.version if latest else None,
            "serving_version": int(serving) if serving else None,
            # committed state: the joiners' stores, the trainer's versions and its state
            "examples_emitted": self.committed.total(
                "joiner", Topics(self.config.topic_prefix).training_examples(model), "emitted"
            ),
            "examples_trained": int(meta.get("examples_seen", 0)),
            "examples_trained_live": int(
                self.gauge(trainer, "streamlearn_trainer_examples_seen", model=model)
                or meta.get("examples_seen", 0)
            ),
            "duplicates_dropped": int(meta.get("duplicates_dropped", 0)),
            "progressive_auc": (
                auc_live if auc_live is not None else (meta.get("metrics") or {}).get("auc")
            ),
            "progressive_logloss": self.gauge(
                trainer, "streamlearn_progressive_metric", metric="logloss"
            ),
            "progressive_ne": self.gauge(trainer, "streamlearn_progressive_metric", metric="ne"),
            "progressive_calibration": self.gauge(
                trainer, "streamlearn_progressive_metric", metric="calibration"
            ),
            "predictions_served": int(
                self.counter("serving", "streamlearn_predictions_total", model=model)
            ),
            "serve_p99_ms": self.p99_ms(
                "serving", "streamlearn_predict_latency_seconds", model=model
            ),
            "surface": surface,
        }
        at_end = (final.get("surfaces") or {}).get(surface) or {}
        for policy in ("model", "model_expected", "random", "oracle", "fallback"):
            live = value(sim, "streamlearn_simulator_ctr", surface=surface, policy=policy)
            out[f"ctr_{policy}"] = at_end.get(f"ctr_{policy}", live)
        out.update(self.freshness(model))
        return out

    def freshness(self, model: str | None = None) -> dict[str, Any]:
        """Freshness quantiles and their breakdown, from serving's histograms (over every
        model, or one): seconds from an engagement to being served by a version that
        learned it (``streamlearn.models.freshness``). With several serving replicas, each one's
        observations count (each swaps versions in on its own)."""
        last: Samples = {}
        for c in self.members("serving"):
            for name, rows in c.last.items():
                last.setdefault(name, []).extend(rows)
        labels = {} if model is None else {"model": model}
        out: dict[str, Any] = {
            "freshness_p50_s": _round(histogram_quantile(last, _FRESHNESS, 0.5, **labels)),
            "freshness_p99_s": _round(histogram_quantile(last, _FRESHNESS, 0.99, **labels)),
            "freshness_mean_s": _round(histogram_mean(last, _FRESHNESS, **labels)),
            "freshness_positives": int(total(last, f"{_FRESHNESS}_count", **labels)),
        }
        out["freshness_breakdown_s"] = {
            stage: {
                "p50": _round(histogram_quantile(last, _STAGE, 0.5, stage=stage, **labels)),
                "mean": _round(histogram_mean(last, _STAGE, stage=stage, **labels)),
            }
            for stage in FRESHNESS_STAGES
        }
        return out

    def version_figures(self, model: str) -> list[dict[str, Any]]:
        """Per version of ``model`` (those the registry still holds): stage, origin, and
        its live AUC, NE and calibration per traffic (``served``, ``shadow``,
        ``progressive``), for the end-of-run summary."""
        rows = []
        for row in describe(self.registry, model):
            live = row.get("live") or {}
            rows.append(
                {
                    "version": row["version"],
                    "stage": row["stage"],
                    "origin": row["origin"],
                    **{
                        f"{traffic}_{k}": _round4(v)
                        for traffic, figures in sorted(live.items())
                        for k, v in figures.items()
                    },
                }
            )
        return rows

    def source_summary(self) -> dict[str, Any]:
        """The source's end-of-run summary (simulator or producer), once it has stopped
        and written it."""
        source = self.children.get(self.source or "")
        if source is None or source.alive or not self.source_summary_path.exists():
            return {}
        try:
            return dict(json.loads(self.source_summary_path.read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def source_summary_path(self) -> Path:
        return self.config.data_dir / "logs" / f"{self.source or 'source'}.json"

    # -- stop ------------------------------------------------------------------------------
    def stop(self, drain_timeout_s: float = 20.0) -> None:
        """Stop the source (simulator or producer), let the processors catch up, stop the
        rest, then the broker."""
        source = self.children.get(self.source or "")
        if source is not None:
            source.stop()
            self.note(f"{source.name} stopped")
        # Caught up: everything the source produced is processed, and the counts (events
        # processed, examples emitted and learned) have stood still for longer than the
        # processors' commit interval: events from other producers may still be in flight
        # behind the source's, and the joiner and trainers work through their backlog.
        deadline = time.monotonic() + drain_timeout_s
        last: tuple[int, ...] = ()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            self.poll_metrics_only()
            f = self.figures()
            now = (
                f["events_processed"],
                *(m.get(k) or 0 for m in f["models"].values() for k in _DRAINED),
            )
            if now != last:
                last, still_since = now, time.monotonic()
            elif (
                f["events_processed"] >= f["events_produced"]
                and time.monotonic() - still_since >= _QUIET_S
            ):
                break
            time.sleep(0.5)
        self._record_metrics(force=True)  # the last round, before the processes go
        trainers = [trainer_name(m) for m in self.models]
        for role in ("serving", "joiner", *trainers, "features"):
            for child in self.members(role):
                child.stop()
        self.note("processors stopped")
        if self.broker is not None:
            address.remove(self.config.data_dir)
            self.broker.stop()

    def poll_metrics_only(self) -> None:
        for child in self.children.values():
            if child.alive:
                self._refresh(child)
        self._record_metrics()

    def _record_metrics(self, force: bool = False) -> None:
        """Add a round of every child's last scrape to the metrics file, when one is due."""
        now = time.time()
        if self.metrics_file is None or not (force or self.metrics_file.due(now)):
            return
        fresh = {n: (c.metrics_port, c.families) for n, c in self.children.items() if c.fresh}
        self.metrics_file.record(now, fresh)
        self.metrics_file.write()
        for c in self.children.values():
            c.fresh = False


def _member(role: str, i: int, n: int) -> str:
    """The name of the ``i``-th of ``n`` children of ``role``: the role alone when n is 1."""
    return role if n == 1 else f"{role}-{i}"


def _role(name: str) -> str:
    """``features-2`` → ``features`` (``trainer-<model>`` is a role of its own)."""
    head, _, tail = name.rpartition("-")
    return head if head and tail.isdigit() else name


_FRESHNESS = "streamlearn_freshness_seconds"
_STAGE = "streamlearn_freshness_stage_seconds"


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _round4(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def run_stack(
    config: StackConfig,
    render: Callable[[Stack], None],
    stop_requested: Callable[[], bool],
) -> dict[str, Any]:
    """Start the stack, call ``render`` about twice a second, stop, return the figures."""
    stack = Stack(config)
    try:
        stack.start()
        while not stop_requested():
            if (
                config.duration_s is not None
                and time.monotonic() - stack.started >= config.duration_s
            ):
                break
            stack.poll()
            render(stack)
            time.sleep(0.5)
    finally:
        # the final figures are read before the children go away
        stack.stop()
    stack.read_committed_stores()
    summary = stack.figures()
    for model, figures in summary["models"].items():
        figures["by_version"] = stack.version_figures(model)
        figures["decisions"] = [e for e in history(stack.registry, model) if e.get("by")]
    summary["events"] = stack.events
    return summary
