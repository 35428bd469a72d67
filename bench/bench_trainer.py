"""The online trainer's examples/s from its topic, against the same learner in ``eval``.

Not a test: ``python bench/bench_trainer.py [--examples 335080] [--partitions 4]
[--compression none|lz4] [--repeats 3]``. In one run it starts an embedded broker,
produces ``--examples`` feed training examples (``feed_log.py``: the simulator's traffic
with the feature store's features, ~480 B of JSON each) into ``training-examples.feed``,
then measures, per round, as a user would:

(a) raw consume: a bare confluent-kafka ``consume(10000)`` loop over the topic, nothing
    else (how fast the broker hands the records over: the ceiling of any consumer); and
    the same loop in 2 and 4 processes at once, each reading its share of the
    partitions: their records/s together is the broker's ceiling, whatever the client;
    and the loop from half-way and from 80% into each partition (the embedded broker's
    fetch slows with the offset it reads from: a consumer at the tail of a long log, as
    a trainer of a long run is, gets fewer records a second than one at its start);
    these need a topic of many batches (the default): on a few, the waits dominate;
(b) ``streamlearn eval --topic … --definition feed``: the learner alone (featurising the
    Arrow columns, predicting and learning, ``eval``'s own ``examples_per_s``; its replay
    of the topic into Parquet is not timed);
(c) ``streamlearn train --model feed`` on a fresh data dir, as a child process, at its
    defaults (a serving-only version every second, a full snapshot every 10 s, the
    rollout on): examples learned per second, the slope of a least-squares line through
    its ``streamlearn_examples_trained_total`` scraped every 200 ms while it learns, and
    its CPU per example (all its threads, and its main thread alone, from /proc) over the
    same span. Start-up (imports, the kernels' load, the group join) comes before the
    first example and is reported apart.

Then, in this process (``--stages``, once): the trainer's own work per example with no
broker at all, stage by stage, on the same records in batches of 10,000 as ``train``
consumes them, with the garbage collector set as ``train`` sets it: decoding (msgspec),
the columns and their featurisation, the identity checks, and learning with its
bookkeeping (progressive metrics, the rollout's evaluation, fingerprints). Their sum is
the most one process can learn per second however fast the records came.

Each trainer run ends by reading its final snapshot back: it must have learned every
example exactly once (``examples_seen`` = examples = the sum of the offsets), or the run
fails. ``--compression lz4`` produces the topic compressed (as a producer of a busy
topic would); the broker then hands over several times more records per second. The
machine is shared: compare the ratios of one run. ``--profile`` records the trainer with
py-spy (collapsed stacks) instead of running ``eval``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from feed_log import cached_feed_examples

from streamlearn.models.registry import FileRegistry
from streamlearn.stack.scrape import scrape, total
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics, ensure_loop_topics

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU of ``pid`` (its threads included; one thread's with ``tid``)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def learning_rate(series: list[tuple[float, float]], learned: float, seconds: float) -> float:
    """Examples/s while learning: the slope of a least-squares line through the scraped
    ``(time, examples)`` series, or ``learned / seconds`` with fewer than 3 points."""
    if len(series) >= 3:
        t, k = np.array(series).T
        return float(np.polyfit(t, k, 1)[0])
    return learned / max(seconds, 1e-9)


def env_for(kafka: KafkaConfig) -> dict[str, str]:
    return dict(
        os.environ,
        STREAMLEARN_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMLEARN_TOPIC_PREFIX=kafka.topic_prefix,
        STREAMLEARN_PARTITIONS=str(kafka.partitions),
    )


def _bare_loop(consumer: Consumer, n: int, batch: int = 10_000) -> tuple[int, float, float, float]:
    """Consume ``n`` records (at most 120 s) with nothing else, then close ``consumer``:
    the records after the first batch (the fetch set-up left out), the first batch's
    time, the end's time and this process's CPU seconds between them."""
    got, first, t0, cpu0 = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        msgs = consumer.consume(batch, 1.0)
        if msgs and not first:
            first, t0, cpu0 = len(msgs), time.perf_counter(), time.process_time()
        got += len(msgs)
    t1, cpu = time.perf_counter(), time.process_time() - cpu0
    consumer.close()
    return got - first, t0, t1, cpu


def raw_consume(kafka: KafkaConfig, topic: str, n: int) -> dict[str, float]:
    """(a): records/s and CPU/record of a bare consume loop (no decoding)."""
    consumer = Consumer(kafka.consumer_conf(f"raw-{uuid.uuid4().hex}"))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(kafka.partitions)])
    got, t0, t1, cpu = _bare_loop(consumer, n)
    return {"records_per_s": got / (t1 - t0), "cpu_us": cpu / got * 1e6}


def _consume_share(
    bootstrap: str, topic: str, parts: list[int], n: int, ready: Any, go: Any, out: Any
) -> None:
    """The bare loop over ``parts`` (``n`` records), started when ``go`` is set: puts
    what ``_bare_loop`` returns, less the CPU."""
    consumer = Consumer(KafkaConfig(bootstrap).consumer_conf(f"raw-{uuid.uuid4().hex}"))
    ready.put(True)
    go.wait(60)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out.put(_bare_loop(consumer, n)[:3])


def raw_consume_from(kafka: KafkaConfig, topic: str, counts: list[int], at: float) -> float:
    """(a): records/s of the bare loop from ``at`` (a fraction) into each partition."""
    consumer = Consumer(kafka.consumer_conf(f"raw-{uuid.uuid4().hex}"))
    starts = [int(n * at) for n in counts]
    consumer.assign([TopicPartition(topic, p, s) for p, s in enumerate(starts)])
    got, t0, t1, _ = _bare_loop(consumer, sum(counts) - sum(starts))
    return got / (t1 - t0)


def partition_counts(kafka: KafkaConfig, topic: str, n: int) -> list[int]:
    """Records per partition of ``topic`` (``n`` in all), read once."""
    consumer = Consumer(kafka.consumer_conf(f"raw-{uuid.uuid4().hex}"))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(kafka.partitions)])
    counts = [0] * kafka.partitions
    got = 0
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        for m in consumer.consume(10_000, 1.0):
            counts[m.partition()] += 1  # type: ignore[index]
            got += 1
    consumer.close()
    return counts


def raw_consume_together(kafka: KafkaConfig, topic: str, counts: list[int], k: int) -> float:
    """(a): records/s of ``k`` bare consume loops in processes of their own, each over
    its share of the partitions, from the first record any got to the last (the
    broker's ceiling: a client-bound loop would scale with ``k``)."""
    ctx = multiprocessing.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [list(range(kafka.partitions))[i::k] for i in range(k)]
    procs = [
        ctx.Process(
            target=_consume_share,
            args=(
                *(kafka.bootstrap_servers, topic, share, sum(counts[p] for p in share)),
                *(ready, go, out),
            ),
        )
        for share in shares
    ]
    for p in procs:
        p.start()
    for _ in procs:  # all started (imports done), then all at once
        ready.get(timeout=120)
    go.set()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    got = sum(r[0] for r in results)
    return got / (max(r[2] for r in results) - min(r[1] for r in results))


def stages(raws: list[bytes], tmp: Path, batch: int = 10_000) -> dict[str, float]:
    """The trainer's work per example (µs) without a broker, stage by stage (module
    docstring); the first 30,000 records warm it up, the next 200,000 are timed."""
    from streamlearn.cli.commands.worker import _trainer
    from streamlearn.cli.options import model_definition
    from streamlearn.project import load_project
    from streamlearn.streams.learning import trainer as trainer_module
    from streamlearn.streams.runtime.processor import RecordBatch

    topics = Topics("bench.")
    definition = model_definition(load_project(None), "feed")
    tr = _trainer(topics, tmp / "stages", definition, None, [], 10.0)
    topic = topics.training_examples("feed")
    decode = tr.inputs()[topic]
    clock: dict[str, float] = dict.fromkeys(("decode", "columns", "identity", "learn"), 0.0)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                clock[name] += time.perf_counter() - t0

        return wrapper

    class Source:  # what RecordBatch reads of a message: its timestamp
        def timestamp(self) -> tuple[int, int]:
            return (1, 1_780_000_000_000)

    sources = [Source()] * batch
    warm, timed_raws = raws[:30_000], raws[30_000:230_000]
    tr.tick(time.time())  # loads (a fresh model): from here on its parts are timed
    # the collector as ``streamlearn train`` sets it (``run_processor``): what is loaded
    # is frozen, young collections every 50,000 allocations
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    tr._block = timed("columns", tr._block)  # type: ignore[method-assign]
    tr._learn = timed("learn", tr._learn)  # type: ignore[method-assign]
    example_ids = trainer_module.example_ids  # put back when done
    trainer_module.example_ids = timed("identity", example_ids)
    tr.seen.fresh = timed("identity", tr.seen.fresh)  # type: ignore[method-assign]
    total = 0.0
    for part, rows in enumerate((warm, timed_raws)):
        if part == 1:
            for k in clock:
                clock[k] = 0.0
            total = time.perf_counter()
        for s in range(0, len(rows), batch):
            chunk = rows[s : s + batch]
            t0 = time.perf_counter()
            values = decode.many(chunk)
            clock["decode"] += time.perf_counter() - t0
            offs = np.arange(s, s + len(chunk), dtype=np.int64) + part * 10**9
            parts = np.zeros(len(chunk), dtype=np.int32)
            tr.process_batch(RecordBatch(topic, parts, offs, values, sources[: len(chunk)]))
            tr.tick(time.time())
    total = time.perf_counter() - total
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    trainer_module.example_ids = example_ids
    n = len(timed_raws)
    out = {k: v / n * 1e6 for k, v in clock.items()}
    out["other"] = total / n * 1e6 - sum(out.values())
    out["total"] = total / n * 1e6
    return out


def run_eval(kafka: KafkaConfig, topic: str, tmp: Path) -> dict[str, float]:
    """(b): ``eval``'s examples/s and AUC of the learner alone on the topic."""
    out = tmp / "eval.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "streamlearn", "eval", "--topic", topic),
            *("--definition", "feed", "--summary-json", str(out), "--quiet"),
        ],
        env=env_for(kafka),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s = json.loads(out.read_text())
    return {"examples_per_s": s["examples_per_s"], "auc": s["auc"]}


def run_train(
    kafka: KafkaConfig, n: int, tmp: Path, timeout: float, profile: Path | None = None
) -> dict[str, Any]:
    """(c): ``streamlearn train`` from the topic, measured from outside."""
    data = tmp / f"train-{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = open(data.with_suffix(".log"), "wb")  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamlearn", "train", "--model", "feed"),
            *("--data-dir", str(data), "--metrics-port", str(port)),
        ],
        env=env_for(kafka),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--threads"),
                *("--rate", "250", "--output", str(profile)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    series: list[tuple[float, float]] = []
    first: tuple[float, float, float, float] | None = None  # time, seen, cpu, main cpu
    last: tuple[float, float, float] | None = None
    seen = 0.0
    try:
        while time.monotonic() - started < timeout:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise SystemExit(f"trainer exited {proc.returncode}: see {log.name}")
            try:
                seen = total(scrape(port), "streamlearn_examples_trained_total")
            except OSError:
                continue
            now = time.monotonic()
            if 0 < seen < n:
                series.append((now, seen))
            if seen > 0 and first is None:
                first = (now, seen, cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid))
            if seen >= n:
                last = (now, cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid))
                break
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if first is None or last is None:
        raise SystemExit(f"trainer learned {seen:.0f} of {n} in {timeout} s: see {log.name}")
    snap = FileRegistry(data / "registry").latest("feed")
    assert snap is not None
    meta = snap.metadata
    offsets = sum(meta["offsets"].values())
    if not meta["examples_seen"] == offsets == n:
        raise SystemExit(f"not exactly once: examples_seen={meta['examples_seen']}, {offsets=}")
    learned = n - first[1]
    return {
        "examples_per_s": learning_rate(series, learned, last[0] - first[0]),
        "cpu_us": (last[1] - first[2]) / learned * 1e6,
        "main_us": (last[2] - first[3]) / learned * 1e6,
        "startup_s": first[0] - started,
        "auc": meta["metrics"]["auc"],
        "versions": snap.version,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--examples", type=int, default=335_080)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--compression", choices=("none", "lz4"), default="none")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "streamlearn-bench")
    ap.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the trainer")
    ap.add_argument(
        "--stages", action="store_true", help="also the trainer's work per stage, in process"
    )
    args = ap.parse_args()
    raws = cached_feed_examples(args.examples, args.cache)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as d, EmbeddedBroker() as broker:
        tmp = Path(d)
        kafka = KafkaConfig(broker.bootstrap_servers, "bench.", partitions=args.partitions)
        topics = Topics(kafka.topic_prefix)
        ensure_loop_topics(kafka, topics, models=("feed",))
        topic = topics.training_examples("feed")
        producer = make_producer(kafka, **{"compression.type": args.compression, "linger.ms": 50})
        for i, raw in enumerate(raws):
            produce(producer, topic, raw, f"u{i % 997}")
        flush(producer)
        print(
            f"{len(raws):,} feed examples in {topic} ({args.partitions} partitions, "
            f"compression {args.compression}); load average {os.getloadavg()[0]:.1f}"
        )
        counts = partition_counts(kafka, topic, len(raws))
        for r in range(args.repeats):
            raw = raw_consume(kafka, topic, len(raws))
            together = {
                k: raw_consume_together(kafka, topic, counts, k)
                for k in (2, 4)
                if k <= args.partitions
            }
            later = {at: raw_consume_from(kafka, topic, counts, at) for at in (0.5, 0.8)}
            ev = {"examples_per_s": 1.0, "auc": 0.0}
            if not args.profile:
                ev = run_eval(kafka, topic, tmp)
            tr = run_train(kafka, len(raws), tmp, args.timeout, args.profile)
            rate = tr["examples_per_s"]
            print(
                f"round {r + 1} (load {os.getloadavg()[0]:.1f}): "
                f"raw consume {raw['records_per_s']:,.0f} records/s "
                f"({raw['cpu_us']:.2f} us CPU each)"
                + "".join(f", {k} processes {v:,.0f} together" for k, v in together.items())
                + "".join(f", from {at:.0%} in {v:,.0f}" for at, v in later.items())
                + f" | eval {ev['examples_per_s']:,.0f} ex/s "
                f"(auc {ev['auc']:.4f}) | train {rate:,.0f} ex/s = "
                f"{rate / raw['records_per_s']:.2f}x raw consume, "
                f"{rate / ev['examples_per_s']:.2f}x eval; {tr['cpu_us']:.2f} us CPU/example "
                f"({tr['main_us']:.2f} in its main thread), auc {tr['auc']:.4f}, "
                f"{tr['versions']} versions, start-up {tr['startup_s']:.1f} s"
            )
        if args.stages:
            st = stages(raws, tmp)
            print(
                "in process, no broker (us per example): "
                + ", ".join(f"{k} {v:.2f}" for k, v in st.items())
                + f" -> at most {1e6 / st['total']:,.0f} examples/s from these stages alone"
            )


if __name__ == "__main__":
    main()
