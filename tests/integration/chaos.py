"""Chaos under load: ``streamlearn up`` on a broker of our own, with processes killed with
SIGKILL, frozen past their session time-out (SIGSTOP, then SIGCONT: zombies), a worker's
store deleted, the broker paused; then the truth, read back from the topics with aiokafka
(``truth``), against which the summary's figures are checked too. Used by
``test_chaos.py`` and ``test_zombies.py`` (short, in CI) and by ``bench/soak.py`` (long)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamlearn.cli.commands.worker import _trainer
from streamlearn.models.registry import FileRegistry
from streamlearn.serving.sink import FEATURE_LOG_WINDOW
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.clients import KafkaCluster, flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.dedup import example_ids
from streamlearn.streams.learning.trainer import example_fingerprint, is_online
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from tests.example import MODELS
from tests.integration.truth import (
    Truth,
    check_features,
    diff_features,
    feature_log_gaps,
    latest_features,
    read,
    single_worker_features,
)

PARTITIONS = 4
MALFORMED = (
    b"{not json",
    b'{"event_id": "x1", "type": "click"}',
    b'{"event_id":"x2","type":"teleport","ts":1,"user_id":"u","item_id":"i",'
    b'"surface":"feed","request_id":"r"}',
)


@dataclass(frozen=True)
class Plan:
    """What happens to the loop, and when (seconds after ``up`` starts)."""

    duration_s: float = 40.0
    rate: float = 40.0
    workers: int = 2
    serving_replicas: int = 2
    #: (when, process): SIGKILL; ``up`` restarts it
    kills: tuple[tuple[float, str], ...] = (
        (11.0, "features-1"),
        (13.0, "joiner-2"),
        (15.0, "trainer-feed"),
        (17.0, "serving-1"),
        (20.0, "features-2"),
        (36.0, "joiner-1"),
    )
    #: (when, process, seconds): SIGSTOP, then SIGCONT that many seconds later
    freezes: tuple[tuple[float, str, float], ...] = ()
    #: processes whose local stores are deleted just before their first kill
    delete_stores: tuple[str, ...] = ("features-1",)
    #: the broker is stopped (SIGSTOP) at this time for ``pause_s``, then continued
    pause_at_s: float | None = 23.0
    pause_s: float = 10.0
    malformed_events: int = 30
    snapshot_interval_s: float = 5.0


@dataclass
class Outcome:
    """What ``run`` saw and what the topics say."""

    summary: dict[str, Any]
    kills: int
    truth: Truth
    feature_diffs: list[str]
    #: per model: examples in its topic, its last snapshot, the fingerprints of learning
    #: each distinct example once (by its coordinates, by its id)
    examples_in_topic: dict[str, int]
    snapshot: dict[str, dict[str, Any]]
    fingerprint_expected: dict[str, int]
    ids_fingerprint_expected: dict[str, int]
    #: per model: examples emitted more than once (same request and item)
    duplicate_examples: dict[str, int]
    #: per model: the distinct examples below the offsets of its last version when ``up``
    #: stopped (what the summary's ``examples_trained`` must be)
    learned_by_up: dict[str, int]
    activity_after_pause: int
    seconds: float
    #: requests shown (impressions) without a feature-log record, less those the simulator
    #: ranked at random (serving did not answer them): records a serving crash lost
    feature_log_lost: int = 0
    serving_kills: int = 0
    notes: list[str] = field(default_factory=list)

    def summary_problems(self) -> list[str]:
        """Where the summary's figures (from committed state) differ from the topics."""
        s, t = self.summary, self.truth
        out = []
        if s["events_processed"] != t.events:
            out.append(f"summary: events_processed={s['events_processed']}, topics: {t.events}")
        if s["dlq_events"] != len(t.malformed):
            out.append(f"summary: dlq_events={s['dlq_events']}, malformed: {len(t.malformed)}")
        for model, m in s["models"].items():
            if m["examples_emitted"] != self.examples_in_topic[model]:
                out.append(
                    f"summary: model={model} examples_emitted={m['examples_emitted']}, in the "
                    f"topic: {self.examples_in_topic[model]}"
                )
            if m["examples_trained"] != self.learned_by_up[model]:
                out.append(
                    f"summary: model={model} examples_trained={m['examples_trained']}, "
                    f"distinct examples below its offsets: {self.learned_by_up[model]}"
                )
        return out

    def problems(self) -> list[str]:
        """Everything that is not exact."""
        out = list(self.truth.wrong)
        out += [f"feature differs from one worker's: {d}" for d in self.feature_diffs[:10]]
        out += self.summary_problems()
        for model, snap in self.snapshot.items():
            seen, offsets = snap["examples_seen"], sum(snap["offsets"].values())
            in_topic, twice = self.examples_in_topic[model], self.duplicate_examples[model]
            if twice:
                out.append(f"model={model}: {twice} examples emitted more than once")
            if not (seen + snap["duplicates_dropped"] == offsets == in_topic and seen > 0):
                out.append(
                    f"model={model} snapshot examples_seen={seen} (duplicates dropped "
                    f"{snap['duplicates_dropped']}), sum of offsets={offsets}, examples in "
                    f"the topic={in_topic}"
                )
            if seen != in_topic - twice:
                out.append(f"model={model}: learned {seen} of {in_topic - twice} examples")
            if int(snap["fingerprint"]) != self.fingerprint_expected[model]:
                out.append(f"model={model}: the fingerprint is not each example learned once")
            if int(snap["ids_fingerprint"]) != self.ids_fingerprint_expected[model]:
                out.append(f"model={model}: not each (request, item) learned once")
        bound = self.serving_kills * FEATURE_LOG_WINDOW
        if self.feature_log_lost > bound:
            out.append(
                f"{self.feature_log_lost} shown requests lost their feature-log record, more "
                f"than the {bound} that {self.serving_kills} serving kill(s) may lose"
            )
        return out


def _pid(data: Path, name: str) -> int:
    return int((data / "run" / f"{name}.pid").read_text())


def _inject(
    kafka: KafkaConfig, topics: Topics, n: int, spread_s: float, stop: threading.Event
) -> None:
    """``n`` malformed events over ``spread_s`` seconds, as a foreign producer would."""
    producer = make_producer(kafka)
    for i in range(n):
        if stop.wait(spread_s / max(n, 1)):
            break
        produce(producer, topics.activity, MALFORMED[i % len(MALFORMED)], f"bad-{i % 7}")
        producer.poll(0)
    flush(producer)


def run(broker: EmbeddedBroker, data: Path, plan: Plan) -> Outcome:
    """Run ``up`` under ``plan`` against ``broker``, then read the truth back."""
    t0 = time.monotonic()
    prefix = f"chaos{uuid.uuid4().hex[:6]}."
    kafka = KafkaConfig(broker.bootstrap_servers, prefix, PARTITIONS)
    topics = Topics(prefix)
    summary_path = data / "summary.json"
    data.mkdir(parents=True, exist_ok=True)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlearn",
            "up",
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic-prefix",
            prefix,
            "--data-dir",
            str(data),
            "--duration",
            str(plan.duration_s),
            "--rate",
            str(plan.rate),
            "--workers",
            str(plan.workers),
            "--serving-replicas",
            str(plan.serving_replicas),
            "--snapshot-interval",
            str(plan.snapshot_interval_s),
            "--summary-json",
            str(summary_path),
        ],
        stdout=open(data / "up.log", "ab"),  # noqa: SIM115 - handed to the child
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    injector: threading.Thread | None = None
    notes: list[str] = []
    kills = 0
    activity_after_pause = 0
    try:
        events: list[tuple[float, str]] = [(at, f"kill {name}") for at, name in plan.kills]
        events += [(at, f"freeze {name} {secs}") for at, name, secs in plan.freezes]
        if plan.pause_at_s is not None:
            events.append((plan.pause_at_s, "pause"))
        events.append((5.0, "inject"))
        deleted: set[str] = set()
        killed: dict[str, int] = {}
        for at, what in sorted(events):
            wait = at - (time.monotonic() - t0)
            if wait > 0:
                time.sleep(wait)
            if up.poll() is not None:
                raise AssertionError(f"up exited early with {up.returncode}; see {data}/up.log")
            if what == "inject":
                injector = threading.Thread(
                    target=_inject,
                    args=(kafka, topics, plan.malformed_events, plan.duration_s * 0.6, stop),
                )
                injector.start()
            elif what.startswith("freeze"):
                _, name, secs = what.split()
                # a zombie holds partitions: wait (bounded) until the worker has some
                log_path = data / "logs" / f"{name}.log"
                waited = time.monotonic() + 30
                while time.monotonic() < waited and " assigned " not in _text(log_path):
                    time.sleep(0.2)
                _freeze(_pid(data, name), float(secs), name, notes, t0)
            elif what == "pause":
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)
                notes.append(f"broker paused at {time.monotonic() - t0:.1f}s")
                time.sleep(plan.pause_s)
                os.kill(broker.pid, signal.SIGCONT)
                activity_after_pause = _activity_end(kafka, topics)
            else:
                name = what.split()[1]
                if name in plan.delete_stores and name not in deleted:
                    wid = name.rsplit("-", 1)[1]
                    shutil.rmtree(data / "state" / f"w{wid}" / "features", ignore_errors=True)
                    deleted.add(name)
                    notes.append(f"deleted the store of {name}")
                try:
                    pid = _pid(data, name)
                    waited = time.monotonic() + 15
                    while pid == killed.get(name) and time.monotonic() < waited:
                        time.sleep(0.2)  # not restarted yet: kill the new one
                        pid = _pid(data, name)
                    os.kill(pid, signal.SIGKILL)
                    killed[name] = pid
                    kills += 1
                except (OSError, ValueError) as exc:
                    notes.append(f"could not kill {name}: {exc}")
        up.wait(plan.duration_s + 180)
    finally:
        stop.set()
        if injector is not None:
            injector.join(30)
        if up.poll() is None:
            up.kill()
            up.wait()
    if up.returncode != 0:
        raise AssertionError(f"up exited with {up.returncode}; see {data}/up.log")
    summary = json.loads(summary_path.read_text())
    registry = FileRegistry(data / "registry")
    at_up_end = {m: registry.latest(m) for m in MODELS.names}

    # The trainers were stopped with the rest; a restart learns what they had not yet.
    cluster = KafkaCluster(kafka)
    snapshots: dict[str, dict[str, Any]] = {}
    in_topic: dict[str, int] = {}
    fingerprints: dict[str, int] = {}
    ids_fingerprints: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    learned_by_up: dict[str, int] = {}
    for model in MODELS.names:
        trainer = _trainer(topics, data, MODELS.get(model), None, [], 3600.0, cluster=cluster)
        MicroBatchRuntime(
            trainer, kafka, RuntimeConfig(f"{prefix}trainer.{model}", commit_interval_s=0)
        ).run(max_seconds=90, idle_polls=30)
        online = [mv for mv in trainer.registry.versions(model) if is_online(mv)]
        meta = online[-1].metadata
        snapshots[model] = {
            "examples_seen": meta["examples_seen"],
            "duplicates_dropped": meta["duplicates_dropped"],
            "offsets": meta["offsets"],
            "fingerprint": meta["fingerprint"],
            "ids_fingerprint": meta["ids_fingerprint"],
            "version": online[-1].version,
        }
        topic = topics.training_examples(model)
        examples = sorted(
            read(broker.bootstrap_servers, topic, PARTITIONS), key=lambda r: (r.partition, r.offset)
        )
        in_topic[model] = len(examples)
        # the first copy of each (request, item) is the one learned
        first: dict[tuple[str, str], Any] = {}
        for r in examples:
            first.setdefault(_identity(r), r)
        duplicates[model] = len(examples) - len(first)
        fp = 0
        for r in first.values():
            fp = (fp + example_fingerprint(topic, r.partition, r.offset)) % (1 << 64)
        fingerprints[model] = fp
        ids_fingerprints[model] = int(example_ids(first).sum(dtype=np.uint64))
        last = at_up_end[model]
        below = (last.metadata.get("offsets") or {}) if last is not None else {}
        learned_by_up[model] = len(
            {_identity(r) for r in examples if r.offset < below.get(f"{topic}/{r.partition}", 0)}
        )
    truth = check_features(broker.bootstrap_servers, topics, PARTITIONS)
    gaps = feature_log_gaps(broker.bootstrap_servers, topics, PARTITIONS)
    fallback = sum(
        int(s.get("fallback_requests", 0)) for s in summary.get("simulator_surfaces", {}).values()
    )
    notes.append(
        f"feature log: {gaps.shown} requests shown, {gaps.not_logged} without a record, "
        f"{fallback} of them ranked at random by the simulator (not answered by serving)"
    )
    diffs = diff_features(
        latest_features(broker.bootstrap_servers, topics, PARTITIONS),
        single_worker_features(broker.bootstrap_servers, topics, PARTITIONS),
    )
    return Outcome(
        summary=summary,
        kills=kills,
        truth=truth,
        feature_diffs=diffs,
        examples_in_topic=in_topic,
        snapshot=snapshots,
        fingerprint_expected=fingerprints,
        ids_fingerprint_expected=ids_fingerprints,
        duplicate_examples=duplicates,
        learned_by_up=learned_by_up,
        activity_after_pause=activity_after_pause,
        seconds=time.monotonic() - t0,
        feature_log_lost=max(0, gaps.not_logged - fallback),
        serving_kills=sum(1 for _, name in plan.kills if name.startswith("serving")),
        notes=notes,
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _freeze(pid: int, seconds: float, name: str, notes: list[str], t0: float) -> None:
    """SIGSTOP ``pid`` now and SIGCONT it ``seconds`` later (on a timer thread)."""

    def thaw() -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError as exc:
            notes.append(f"could not thaw {name}: {exc}")

    os.kill(pid, signal.SIGSTOP)
    notes.append(f"froze {name} (pid {pid}) at {time.monotonic() - t0:.1f}s for {seconds:.0f}s")
    timer = threading.Timer(seconds, thaw)
    timer.daemon = False
    timer.start()


def _identity(r: Any) -> tuple[str, str]:
    ex = orjson.loads(r.value or b"{}")
    return str(ex.get("request_id")), str(ex.get("item_id"))


def _activity_end(kafka: KafkaConfig, topics: Topics) -> int:
    """Records in ``activity`` now (true log ends), after the broker came back."""
    ends = KafkaCluster(kafka).log_ends([(topics.activity, p) for p in range(PARTITIONS)], 60)
    return sum(ends.values())


def seeded(seed: int, plan: Plan, n: int, freezes: int = 0) -> Plan:
    """``plan`` with ``n`` kills at random times over its run (the soak's schedule), and
    ``freezes`` feature processors or joiners frozen for 12-25 s (past the 6 s session
    time-out: zombies)."""
    rng = random.Random(seed)
    workers = [
        *(f"features-{i}" for i in range(1, plan.workers + 1)),
        *(f"joiner-{i}" for i in range(1, plan.workers + 1)),
    ]
    names = [
        *workers,
        "trainer-feed",
        "trainer-ads",
        *(f"serving-{i}" for i in range(1, plan.serving_replicas + 1)),
    ]
    start, end = 10.0, plan.duration_s - 5.0
    kills = tuple(sorted((rng.uniform(start, end), rng.choice(names)) for _ in range(n)))
    frozen = tuple(
        sorted(
            (rng.uniform(start, end - 30.0), rng.choice(workers), rng.uniform(12.0, 25.0))
            for _ in range(freezes)
        )
    )
    return replace(plan, kills=kills, freezes=frozen)
