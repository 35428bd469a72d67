"""Soak: the whole loop under repeated kill -9, zombies, a deleted store and a paused
broker, then a new cluster in the same directory; every figure read back from the topics.

Not a test: ``python bench/soak.py [--duration 180] [--kills 20] [--freezes 4] [--seed 1]``.

1. ``streamlearn up --workers 2 --serving-replicas 2`` on an embedded broker of its own
   for ``--duration`` seconds while ``--kills`` processes (features, joiners, the
   trainer, serving replicas; seeded random times) are killed with SIGKILL, ``--freezes``
   feature processors and joiners are frozen for 12-25 s (SIGSTOP past the 6 s session
   time-out, then SIGCONT: zombies), one worker's store is deleted before its first
   kill, 30 malformed events are injected, and the broker is paused for 10 s (SIGSTOP,
   then SIGCONT). Then aiokafka reads the topics:
   per-user and per-item counts in ``features`` against ``activity``, every feature
   against one uninterrupted feature processor over the same records, every malformed
   event in ``activity.dlq``, the trainer's last snapshot (``examples_seen`` = the sum
   of its offsets = the examples in the topic; its fingerprint = each learned once), and
   the feature log: the shown requests (impressions) without a record, less those the
   simulator ranked at random, at most the serving window per serving kill (a note
   prints the figures); no training example emitted twice, each learned once (its ids
   fingerprint); and the summary's figures, from committed state, equal the topics':
   events processed, dead letters, examples emitted and learned.
2. ``up`` on broker A, then ``up --bootstrap-servers B`` in the same data directory: B's
   topics are checked the same way, and the trainer's versions on B must be a new
   lineage, counting its examples from zero.
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
from tests.integration.truth import check_features, read  # noqa: E402


def soak(duration: float, kills: int, freezes: int, seed: int, work: Path) -> bool:
    base = chaos.Plan(duration_s=duration, pause_at_s=duration / 2)
    plan = chaos.seeded(seed, base, kills, freezes)
    print(
        f"soak: {duration:.0f} s, {len(plan.kills)} kills: "
        + ", ".join(f"{name}@{at:.0f}s" for at, name in plan.kills)
        + f"; {len(plan.freezes)} freezes: "
        + ", ".join(f"{name}@{at:.0f}s for {secs:.0f}s" for at, name, secs in plan.freezes)
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
    s = out.summary
    print(
        f"  summary (committed state) against the topics: events_processed "
        f"{s['events_processed']:,} / {t.events:,}, dlq_events {s['dlq_events']} / "
        f"{len(t.malformed)}; "
        + ", ".join(
            f"{m}: examples_emitted {f['examples_emitted']:,} / {out.examples_in_topic[m]:,}, "
            f"examples_trained {f['examples_trained']:,} / {out.learned_by_up[m]:,} "
            f"(duplicates dropped {f.get('duplicates_dropped', 0)})"
            for m, f in s["models"].items()
        )
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
    a_last: tuple[int, str, int] = (0, "", 0)
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
            last = online[-1].metadata
            if name == "A":
                a_last = (online[-1].version, last["lineage_id"], last["examples_seen"])
                continue
            # retention may have deleted all of A's versions by now: B is checked against
            # A's last as it was, a new lineage that counted its examples from zero
            in_b = len(read(broker.bootstrap_servers, Topics(prefix).training_examples("feed"), 4))
            new_lineage = last["lineage_id"] != a_last[1]
            print(
                f"  A's last: v{a_last[0]} (examples_seen={a_last[2]:,}); B's last: "
                f"v{online[-1].version}, {'a new' if new_lineage else 'the same'} lineage, "
                f"examples_seen={last['examples_seen']:,} of the {in_b:,} examples in B's topic"
            )
            ok = ok and new_lineage and 0 < last["examples_seen"] <= in_b
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--freezes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--new-cluster-duration", type=float, default=40.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        work = Path(d)
        ok = soak(args.duration, args.kills, args.freezes, args.seed, work)
        ok = new_cluster(args.new_cluster_duration, work) and ok
    print("soak:", "everything exact" if ok else "PROBLEMS above")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
