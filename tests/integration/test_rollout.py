"""Safe rollout while the loop runs: a bad candidate never reaches production.

``streamlearn up`` runs the feed loop; once the online model has learned from live
traffic, a candidate trained offline on the same examples with their labels flipped (what
a label pipeline with a bug gives) is published (through the real offline publish path:
parity check, ``candidate`` stage).
The candidate is published once production is past its cold start (its served NE below
a constant predictor's, see ``_production_warm``). A candidate with labels shuffled
rather than flipped is not a reliable "bad" one: its arm learns the true labels online
from the moment it enters, and within a minute ties with a young production model.
Serving scores it as a shadow, the trainer compares it with production on the same
requests and rejects it; the test checks, as an outside reader of the topics and the
registry would, that

* no prediction was ever answered by the candidate (or its arm's versions) — it only
  appears in the feature log, as the shadow;
* the simulator's CTR (engagements per shown item) did not drop while it was on trial;
* ``streamlearn models list`` shows the rejection with the figures it rests on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.models.stages import decisions
from streamlearn.offline.train import TrainConfig, train
from streamlearn.streams.catalog.models import FEED
from streamlearn.streams.contracts import TrainingExample, decode_example
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from tests.integration.reading import read_all

pytestmark = pytest.mark.integration
MIN_EXAMPLES = 800
#: production's served NE (count-weighted over its newest versions) before the candidate
WARM_NE = 0.95
WARM_EXAMPLES = 1500


def _wait(pred: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _learned(registry: FileRegistry, n: int) -> bool:
    latest = registry.latest("feed")
    return latest is not None and int(latest.metadata.get("examples_seen", 0)) >= n


def _production_warm(registry: FileRegistry) -> tuple[int, float | None]:
    """Examples served by the newest versions, and their count-weighted served NE.

    In its first seconds the online model over-predicts: with positives at once, a model
    that has learned T seconds has the positives of the last label window and not yet its
    negatives (a surplus of about window / T). Its NE is then above a constant
    predictor's, and a candidate without signal can tie with it."""
    count, weighted = 0, 0.0
    for mv in reversed(registry.versions("feed")):
        served = registry.evaluation(mv).get("traffic", {}).get("served") or {}
        n, ne = int(served.get("count") or 0), served.get("ne")
        if n and ne is not None:
            count, weighted = count + n, weighted + n * float(ne)
        if count >= WARM_EXAMPLES:
            break
    return count, (weighted / count if count else None)


def _engagement_rate(examples: list[TrainingExample], start: float, end: float) -> float:
    """Engaged shown items per shown item, for requests served in [start, end)."""
    labels = [e.label for e in examples if start <= e.ts < end]
    assert len(labels) > 300, (start, end, len(labels))
    return float(np.mean(labels))


def test_a_bad_candidate_never_reaches_production(broker: EmbeddedBroker, tmp_path: Path) -> None:
    started = time.monotonic()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    data = tmp_path / "var"
    summary_path = tmp_path / "s.json"
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    up = subprocess.Popen(
        [
            sys.executable, "-m", "streamlearn", "up",
            "--duration", "300",  # stopped as soon as the decision is made
            "--bootstrap-servers", broker.bootstrap_servers,
            "--topic-prefix", prefix,
            "--data-dir", str(data),
            "--model", "feed",
            "--rate", "100",
            "--snapshot-interval", "3",
            "--rollout-min-examples", str(MIN_EXAMPLES),
            "--summary-json", str(summary_path),
        ],
        env=dict(os.environ),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    kafka = KafkaConfig(broker.bootstrap_servers, prefix)
    topics = Topics(prefix)
    registry = FileRegistry(data / "registry")
    try:
        _wait(lambda: _learned(registry, 1500), 90, "a version that learned from live traffic")
        _wait(
            lambda: (
                (w := _production_warm(registry))[0] >= WARM_EXAMPLES
                and w[1] is not None
                and w[1] < WARM_NE
            ),
            180,
            f"production's served NE below {WARM_NE} on {WARM_EXAMPLES} examples",
        )
        warm = _production_warm(registry)
        # -- the bad candidate: the live examples so far, their labels flipped -----------
        examples = [
            decode_example(m.value())
            for m in read_all(kafka, topics.training_examples("feed"), idle_s=0.5)
        ]
        labels = [1 - e.label for e in examples]
        dataset = tmp_path / "flipped.parquet"
        pq.write_table(
            pa.table(
                {
                    "ts": [e.ts for e in examples],
                    "label": labels,
                    "features": [json.dumps(e.features) for e in examples],
                }
            ),
            dataset,
        )
        published_at = time.time()
        result = train(dataset, TrainConfig(definition=FEED, holdout=0.2), registry, "feed")
        assert result.version is not None and result.version.stage == "candidate"
        bad = result.version.version
        assert result.metrics["parity_max_abs_diff"] <= 1e-5
        _wait(lambda: registry.get("feed", bad).stage != "candidate", 120, "a decision")
        assert registry.get("feed", bad).stage == "rejected", (
            warm,
            registry.get("feed", bad).stage,
            decisions(registry, "feed").get(bad),
        )
        up.send_signal(signal.SIGINT)  # a clean stop of the whole loop
        up.wait(timeout=90)
    except BaseException:
        if up.poll() is None:
            up.kill()
            up.wait()
        log_file.close()
        print(log_path.read_bytes().decode(errors="replace")[-6000:])
        raise
    log_file.close()
    out = log_path.read_bytes()
    assert up.returncode == 0, out.decode(errors="replace")[-3000:]

    # -- `streamlearn models list` shows the rejection and its figures --------------------
    listing = subprocess.run(
        [sys.executable, "-m", "streamlearn", "models", "list", "feed", "--data-dir", str(data)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    rows = {r["version"]: r for r in map(json.loads, listing.stdout.decode().splitlines())}
    row = rows[bad]
    assert row["stage"] == "rejected" and not row["serving"] and row["origin"] == "offline"
    decision = row["decision"]
    assert decision["action"] == "reject" and decision["by"] == "rollout", decision
    fig = decision["figures"]
    assert fig["examples"] >= MIN_EXAMPLES and fig["candidate"] == bad
    assert fig["candidate_ne"] > fig["production_ne"], fig
    arm = {bad} | {v for v, r in rows.items() if r["origin"] == "shadow"}
    assert all(rows[v]["stage"] == "rejected" for v in arm)

    # -- it never answered a request; it ran only as a shadow ------------------------------
    replies = [
        json.loads(m.value() or b"") for m in read_all(kafka, topics.predictions, idle_s=0.5)
    ]
    answered_by = {r["version"] for r in replies if r["model"] == "feed"}
    assert answered_by and not answered_by & arm, (answered_by, arm)
    shadowed = {
        json.loads(m.value() or b"").get("shadow_version")
        for m in read_all(kafka, topics.feature_log, idle_s=0.5)
    }
    assert shadowed & arm, (shadowed, arm)  # the candidate, or its arm's newer versions

    # -- the simulator's CTR did not drop while it was on trial -----------------------------
    # (engagements per shown item, from the labelled examples: requests served in the 20 s
    # before the candidate, against those served while it was on trial and labelled)
    labelled = [
        decode_example(m.value())
        for m in read_all(kafka, topics.training_examples("feed"), idle_s=0.5)
    ]
    on_trial = [e for e in labelled if e.shadow_version in arm]
    assert len(on_trial) >= MIN_EXAMPLES
    trial_start, trial_end = min(e.ts for e in on_trial), max(e.ts for e in on_trial)
    before = _engagement_rate(labelled, trial_start - 20.0, trial_start)
    during = _engagement_rate(labelled, trial_start, trial_end)
    assert during >= before - 0.015, (before, during)
    s = json.loads(summary_path.read_text())
    feed = s["models"]["feed"]
    assert feed["ctr_model_expected"] > feed["ctr_random"], feed
    assert [d["version"] for d in feed["decisions"]] == [bad]
    print(
        f"production served NE {warm[1]:.3f} on {warm[0]} examples; "
        f"bad candidate v{bad}: rejected after {fig['examples']} paired examples, NE "
        f"{fig['candidate_ne']:.3f} vs production {fig['production_ne']:.3f}; engagement "
        f"rate before {before:.4f}, on trial {during:.4f} ({trial_end - trial_start:.0f}s, "
        f"{time.time() - published_at:.0f}s from publish to stop); "
        f"test took {time.monotonic() - started:.0f}s"
    )
