"""The Open Bandit example through the whole loop, and ``streamlearn eval`` on its rows.

    python bench/bench_open_bandit.py [--wheel obp-0.4.1-….whl] [--speed 6000]

Converts the Open Bandit Dataset sample (``examples/open_bandit/convert.py``; pip
downloads the ``obp`` wheel unless ``--wheel`` names one), starts the embedded broker,
runs ``streamlearn up --project examples/open_bandit --log …`` on it (produce →
features → joiner → trainer → serving), asks serving for one ranking while the loop
runs, then runs ``streamlearn eval --definition carousel`` on the run's
``training-examples.carousel`` topic: the same rows, with the same features, learned by
the same learner, in one process. Prints the loop's progressive AUC (from ``up``'s
summary) and eval's, and their difference. Not a CI test: it needs the download.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from streamlearn.examples.open_bandit import convert
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "open_bandit"
PREFIX = "obd."


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "streamlearn"), *args]


def ask(port: int, deadline: float) -> dict[str, object] | None:
    """One ranking from serving, retried until it answers or ``deadline``."""
    body = json.dumps(
        {
            "request_id": "bench-1",
            "user_id": "u14929a11ec",
            "surface": "all",
            "candidates": ["all-1", "all-14", "all-79"],
        }
    ).encode()
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/models/carousel:predict", data=body, method="POST"
            )
            with urllib.request.urlopen(req, timeout=2) as resp:
                return dict(json.load(resp))
        except OSError:
            time.sleep(1.0)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="The obp 0.4.1 wheel (default: download).")
    parser.add_argument("--duration", type=float, default=180.0, help="Length of the up run, s.")
    parser.add_argument(
        "--speed",
        type=float,
        default=6000.0,
        help="Pace of the log (times real time; the week takes 101 s at 6000; 0: as fast "
        "as possible, which leaves the replayed impressions' features stale).",
    )
    parser.add_argument("--partitions", type=int, default=1, help="Partitions per topic.")
    parser.add_argument(
        "--positives-at-once",
        action="store_true",
        help="The joiner's default (positives ahead of their window's negatives); by "
        "default the bench emits every example at its window's close, in event-time order.",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-obd-"))
    wheel = args.wheel or convert.download_wheel(Path(tempfile.gettempdir()) / "streamlearn-obp")
    rows = convert.events(wheel)
    log = work / "obd.csv"
    convert.write_log(rows, log)
    clicks = sum(1 for r in rows if r[1] == "click")
    print(f"log: {len(rows) - clicks} impressions, {clicks} clicks", flush=True)

    env = dict(os.environ, STREAMLEARN_TOPIC_PREFIX=PREFIX)
    with EmbeddedBroker() as broker:
        env["STREAMLEARN_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        port = free_port()
        summary_path = work / "up.json"
        t0 = time.monotonic()
        up = subprocess.Popen(
            cli(
                "up", "--project", str(PROJECT), "--log", str(log),
                "--duration", str(args.duration), "--data-dir", str(work / "var"),
                "--serving-port", str(port), "--summary-json", str(summary_path),
                "--partitions", str(args.partitions), "--speed", str(args.speed),
                "--positives-at-once" if args.positives_at_once else "--positives-at-close",
            ),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # ask once the log is learned: near the end of the run
        time.sleep(max(0.0, args.duration - 30.0))
        answer = ask(port, t0 + args.duration)
        up.wait(args.duration + 60)
        up_s = time.monotonic() - t0
        summary = json.loads(summary_path.read_text())
        loop = summary["models"]["carousel"]
        print(
            f"loop: {summary['events_produced']} events, {loop['versions']} versions, "
            f"{loop['examples_trained']} examples trained, progressive AUC "
            f"{loop['progressive_auc']:.4f} ({up_s:.0f} s)",
            flush=True,
        )
        print(f"serving: {json.dumps(answer)}", flush=True)
        eval_path = work / "eval.json"
        subprocess.run(
            cli(
                "eval", "--topic", f"{PREFIX}training-examples.carousel",
                "--project", str(PROJECT), "--definition", "carousel",
                "--summary-json", str(eval_path), "--quiet",
            ),
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    ev = json.loads(eval_path.read_text())
    print(
        f"eval: {ev['examples']} examples ({ev['positive_rate'] * ev['examples']:.0f} positives), "
        f"{ev['model']} {json.dumps(ev['feature_spec'])}",
    )
    diff = loop["progressive_auc"] - ev["auc"]
    print(
        f"progressive AUC: loop {loop['progressive_auc']:.4f}, eval {ev['auc']:.4f}, "
        f"difference {diff:+.4f}"
    )


if __name__ == "__main__":
    main()
