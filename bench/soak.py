"""Soak: the whole loop under repeated kill -9, a deleted store and a paused broker, then
a new cluster in the same directory; every figure read back from the topics.

Not a test: ``python bench/soak.py [--duration 180] [--kills 20] [--seed 1]``.

1. ``streamlearn up --workers 2 --serving-replicas 2`` on an embedded broker of its own
   for ``--duration`` seconds while ``--kills`` processes (features, joiners, the
   trainer, serving replicas; seeded random times) are killed with SIGKILL, one worker's
   store is deleted before its first kill, 30 malformed events are injected, and the
   broker is paused for 10 s (SIGSTOP, then SIGCONT). Then aiokafka reads the topics:
   per-user and per-item counts in ``features`` against ``activity``, every feature
   against one uninterrupted feature processor over the same records, every malformed
   event in ``activity.dlq``, the trainer's last snapshot (``examples_seen`` = the sum
   of its offsets = the examples in the topic; its fingerprint = each learned once), and
   the feature log: the shown requests (impressions) without a record, less those the
   simulator ranked at random, at most the serving window per serving kill (a note
   prints the figures).
2. ``up`` on broker A, then ``up --bootstrap-servers B`` in the same data directory: B's
   topics are checked the same way, and the trainer's first version on B must start a
   new lineage (its parent is A's last version).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlearn.models.registry import FileRegistry  # noqa: E402
from streamlearn.streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streamlearn.streams.kafka.topics import Topics  # noqa: E402
from streamlearn.streams.learning.trainer import is_online  # noqa: E402
from tests.integration import chaos  # noqa: E402
from tests.integration.truth import check_features  # noqa: E402


def soak(duration: float, kills: int, seed: int, work: Path) -> bool:
    plan = chaos.seeded(seed, chaos.Plan(duration_s=duration, pause_at_s=duration / 2), kills)
    print(
        f"soak: {duration:.0f} s, {len(plan.kills)} kills: "
        + ", ".join(f"{name}@{at:.0f}s" for at, name in plan.kills)
    )
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        out = chaos.run(broker, work / "soak", plan)
    t = out.truth
    print(
        f"  {out.kills} kills survived ({out.summary.get('restarts')}); {t.events:,} events and "
        f"{len(t.malformed)} malformed checked over {t.users_checked:,} users and "
        f"{t.items_checked:,} items; {sum(t.dead_lettered.values())} dead letters "
        f"({t.duplicate_dead_letters} duplicates); {len(out.feature_diffs)} features differ "
        f"from one worker's; training examples {out.examples_in_topic}, last snapshots "
        + ", ".join(
            f"{m} v{s['version']} examples_seen={s['examples_seen']:,} (sum of offsets "
            f"{sum(s['offsets'].values()):,})"
            for m, s in out.snapshot.items()
        )
        + f"; examples emitted twice {out.duplicate_examples}; predictions per "
        f"replica {out.summary.get('predictions_by_replica')}; {out.seconds:.0f} s in all"
    )
    for note in out.notes:
        print(f"  note: {note}")
    problems = out.problems()
    for p in problems[:20]:
        print(f"  PROBLEM: {p}")
    return not problems


def new_cluster(duration: float, work: Path) -> bool:
    data = work / "same-dir"
    prefix = "streamlearn."
    ok = True
    for name in ("A", "B"):
        with EmbeddedBroker(log_path=work / f"broker-{name}.log") as broker:
            t0 = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "streamlearn",
                    "up",
                    "--bootstrap-servers",
                    broker.bootstrap_servers,
                    "--data-dir",
                    str(data),
                    "--duration",
                    str(duration),
                    "--summary-json",
                    str(work / f"summary-{name}.json"),
                    "--snapshot-interval",
                    "5",
                ],
                check=True,
                stdout=open(work / f"up-{name}.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            truth = check_features(broker.bootstrap_servers, Topics(prefix), chaos.PARTITIONS)
            summary = json.loads((work / f"summary-{name}.json").read_text())
            online = [
                mv for mv in FileRegistry(data / "registry").versions("feed") if is_online(mv)
            ]
            print(
                f"cluster {name}: {truth.summary()}; {summary['events_produced']:,} events "
                f"produced; {len(online)} online versions, last v{online[-1].version} "
                f"examples_seen={online[-1].metadata['examples_seen']:,}, parent "
                f"{online[-1].metadata.get('parent_version')}; {time.monotonic() - t0:.0f} s"
            )
            ok = ok and truth.ok() and truth.events > 0
            if name == "B":
                firsts = [
                    mv
                    for mv in online
                    if mv.metadata.get("lineage_id") == online[-1].metadata["lineage_id"]
                ]
                parent = firsts[0].metadata.get("parent_version")
                a_last = max(
                    mv.version
                    for mv in online
                    if mv.metadata["lineage_id"] != firsts[0].metadata["lineage_id"]
                )
                print(
                    f"  B's lineage starts at v{firsts[0].version} with parent v{parent} "
                    f"(A's last: v{a_last})"
                )
                ok = ok and parent == a_last
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--new-cluster-duration", type=float, default=40.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        work = Path(d)
        ok = soak(args.duration, args.kills, args.seed, work)
        ok = new_cluster(args.new_cluster_duration, work) and ok
    print("soak:", "everything exact" if ok else "PROBLEMS above")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
