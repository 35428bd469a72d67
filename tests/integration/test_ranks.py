"""Two trainer ranks learn one model; a rank killed with SIGKILL, another frozen with
SIGSTOP past the rank time-out; every example learned exactly once, read back by an
outside client; the progressive AUC of the model they served within 0.005 of one rank's.

``streamlearn train --model feed --ranks 2`` runs as a user runs it (a launcher and two
rank processes on the embedded broker). The first half of the examples is learned, the
second half produced, and rank 1 is killed with SIGKILL while it learns it: rank 0 finds
its peer gone at the next round, the launcher restarts both and they resume from the last
snapshot (the first round's: full snapshots are rare here, so the kill loses learning the
restart must redo). Then rank 0 is frozen (SIGSTOP) until rank 1's round times out, and
the ranks restart again. On a clean stop, aiokafka reads the topic: the final snapshot has
``examples_seen`` = the sum of its offsets = the examples in the topic, and the
fingerprints of the learned offsets and example ids of every record in it. One rank, in
this process, learns the same topic; the progressive AUC of each lineage (every
version's predict-before-learn tally, carried from snapshot to snapshot, so each example
counts once) differ by at most 0.005.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamlearn.models.evaluation import ScoreTally, VersionEvaluation
from streamlearn.models.registry import FileRegistry
from streamlearn.streams.contracts import TrainingExample, decode_example, encode
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics
from streamlearn.streams.learning.dedup import example_ids
from streamlearn.streams.learning.rollout import ROLLOUT_FILE
from streamlearn.streams.learning.trainer import (
    OnlineTrainer,
    TrainerConfig,
    example_fingerprint,
    is_resume_point,
)
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from tests.example import FEED
from tests.integration.truth import read
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.integration
HALF = 12000
PARTITIONS = 4


def _examples(start: int, n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        u, it = int(rng.integers(200)), int(rng.integers(60))
        label = int(rng.random() < 0.03 + 0.12 * (u % 3 == 0) + 0.2 * (it % 4 == 0))
        ex = TrainingExample(
            request_id=f"r{i}",
            user_id=f"u{u}",
            item_id=f"i{it}",
            surface="feed",
            ts=float(i),
            label=label,  # type: ignore[arg-type]
            served_version=1,
            served_score=0.1,
            features={
                "user_id": f"u{u}",
                "item_id": f"i{it}",
                "surface": "feed",
                "item_category": f"c{it % 6}",
                "user_ctr": float(u % 7) / 10,
            },
        )
        out.append((f"u{u}", encode(ex)))
    return out


def _ranks(launcher: subprocess.Popen[bytes]) -> dict[int, int]:
    """rank → pid of the launcher's children now."""
    path = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    out = {}
    for pid in map(int, path.read_text().split()):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        for kv in env:
            if kv.startswith(b"STREAMLEARN_RANK="):
                out[int(kv.split(b"=", 1)[1])] = pid
    return out


def _seen(registry: FileRegistry, after: int = 0) -> int:
    """``examples_seen`` of the newest version, if it is newer than ``after``."""
    mv = registry.latest("feed")
    return 0 if mv is None or mv.version <= after else int(mv.metadata["examples_seen"])


def _newest(registry: FileRegistry) -> int:
    mv = registry.latest("feed")
    return 0 if mv is None else mv.version


def _back(launcher: subprocess.Popen[bytes], old: dict[int, int]) -> bool:
    """Both ranks running again, as new processes."""
    now = _ranks(launcher)
    return sorted(now) == [0, 1] and set(now.values()).isdisjoint(old.values())


def _progressive_auc(registry: FileRegistry) -> float:
    """The lineage's predict-before-learn AUC: every version's tally, merged."""
    last = [mv for mv in registry.versions("feed") if is_resume_point(mv)][-1]
    raw = registry.read_file(last, ROLLOUT_FILE)
    assert raw is not None
    state = json.loads(raw)
    evaluation = VersionEvaluation.from_dict(state["evaluation"], keep=1024)
    total = ScoreTally.from_dict(state["progressive"])  # the snapshot's own examples
    for version in evaluation.to_dict():
        total.merge(evaluation.tally(int(version), "progressive"))
    assert total.count == last.metadata["examples_seen"]
    auc = total.auc
    assert auc is not None
    return auc


def test_two_ranks_survive_a_kill_and_a_freeze_and_learn_each_example_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaConfig(broker.bootstrap_servers, prefix, partitions=PARTITIONS)
    topics = Topics(prefix)
    ensure_loop_topics(kafka, topics, models=("feed",))
    topic = topics.training_examples("feed")
    producer = make_producer(kafka)

    def publish(rows: list[tuple[str, bytes]]) -> None:
        for key, raw in rows:
            produce(producer, topic, raw, key)
        flush(producer)

    publish(_examples(0, HALF))
    data = tmp_path / "ranks"
    registry = FileRegistry(data / "registry")
    env = dict(
        os.environ,
        STREAMLEARN_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMLEARN_TOPIC_PREFIX=prefix,
        STREAMLEARN_PARTITIONS=str(PARTITIONS),
    )
    log = open(tmp_path / "ranks.log", "wb")  # noqa: SIM115
    cmd = [
        *(sys.executable, "-m", "streamlearn", "train", "--model", "feed", "--ranks", "2"),
        *("--data-dir", str(data), "--snapshot-interval", "3600", "--publish-interval", "0.3"),
        *("--sync-interval", "0.2", "--sync-every", "256", "--rank-timeout", "4"),
        *("--batch-size", "256"),
        *("--metrics-port", str(free_port())),
    ]
    launcher = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _seen(registry) >= HALF, 90, "the first half learned")
        first = _ranks(launcher)
        assert sorted(first) == [0, 1]
        publish(_examples(HALF, HALF))
        wait_for(lambda: _seen(registry) > HALF, 30, "the second half being learned")
        os.kill(first[1], signal.SIGKILL)  # what it learned since the last cut is lost
        killed_at = _newest(registry)
        wait_for(lambda: _back(launcher, first), 60, "every rank restarted")
        wait_for(lambda: _seen(registry, killed_at) >= 2 * HALF, 90, "everything learned again")

        second = _ranks(launcher)
        os.kill(second[0], signal.SIGSTOP)  # rank 0 stops answering; rank 1's round times out
        t0 = time.monotonic()
        frozen_at = _newest(registry)
        wait_for(lambda: _back(launcher, second), 60, "the silent rank found, every rank restarted")
        found_after = time.monotonic() - t0
        wait_for(lambda: _seen(registry, frozen_at) >= 2 * HALF, 90, "everything learned again")
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(60) == 0
    except AssertionError as exc:
        tail = (tmp_path / "ranks.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{exc}\n--- the ranks' log:\n{tail}") from None
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    text = (tmp_path / "ranks.log").read_text(errors="replace")
    assert text.count("exited with an error: restarting all 2 ranks") >= 2, text[-3000:]
    # the time-out, plus the launcher's pause and the new processes' start-up
    assert found_after < 4 + 30, f"a silent rank found and replaced after {found_after:.1f} s"

    # what an outside client reads in the topic
    records = read(kafka.bootstrap_servers, topic, PARTITIONS)
    assert len(records) == 2 * HALF
    expected_fp = sum(example_fingerprint(topic, r.partition, r.offset) for r in records)
    examples = [decode_example(r.value) for r in records]
    ids = example_ids((e.request_id, e.item_id) for e in examples)
    final = registry.latest("feed")
    assert final is not None and is_resume_point(final)
    meta = final.metadata
    assert meta["examples_seen"] == sum(meta["offsets"].values()) == len(records)
    assert meta["offsets"] == {f"{topic}/{p}": HALF // 2 for p in range(PARTITIONS)} or (
        sum(meta["offsets"].values()) == len(records)
    )
    assert int(meta["fingerprint"]) == expected_fp % (1 << 64)
    assert int(meta["ids_fingerprint"]) == int(ids.sum(dtype=np.uint64))
    assert meta["duplicates_dropped"] == 0

    # one rank over the same events
    ref = FileRegistry(tmp_path / "one" / "registry")
    trainer = OnlineTrainer(
        topics,
        ref,
        TrainerConfig(
            definition=FEED, batch_size=256, snapshot_interval_s=3600, publish_interval_s=0.3
        ),
    )
    rt = MicroBatchRuntime(
        trainer, kafka, RuntimeConfig(group_id=f"one-{uuid.uuid4().hex}", commit_interval_s=0.0)
    )
    rt.run(max_seconds=60, max_events=len(records))
    one = ref.latest("feed")
    assert one is not None and one.metadata["examples_seen"] == len(records)
    two_auc, one_auc = _progressive_auc(registry), _progressive_auc(ref)
    assert one_auc > 0.6, "the examples carry a signal"
    assert abs(two_auc - one_auc) <= 0.005, (two_auc, one_auc)
