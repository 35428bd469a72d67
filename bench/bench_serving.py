"""Serving latency: HTTP predict (20 candidates) against a bare onnxruntime run.

Starts the embedded broker and a ServingApp (feature replica, Kafka feature log,
predictions topic: everything a production request pays for) on loopback, then times
from a separate client process (so the client does not share the server's GIL):

* ``raw``     — ``InferenceSession.run`` on the featurised 20 rows (the floor);
* ``service`` — ``PredictionService.predict`` in-process (features, featurise, run);
* ``http``    — ``POST /v1/models/feed:predict`` on one keep-alive connection, paced
  at ``--rate`` requests/s (0: back to back).

Prints p50/p99 per path and their ratios to ``raw`` measured in the same run.
Usage: ``python bench/bench_serving.py [--count 3000] [--seconds 30] [--rate 200] [--hogs 1]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from models import zoo
from models.registry import FileRegistry
from serving.app import ServingApp, ServingConfig
from streams.broker import EmbeddedBroker
from streams.config import KafkaConfig
from streams.contracts import FeatureRecord, PredictionRequest, encode
from streams.feature_catalog import feed_spec
from streams.feature_store import serving_features
from streams.kafka import flush, make_producer, produce
from streams.topics import Topics, ensure_topics

N_USERS, N_ITEMS, N_CANDIDATES = 1000, 500, 20


def _request(i: int, rng: np.random.Generator) -> dict[str, object]:
    items = rng.choice(N_ITEMS, N_CANDIDATES, replace=False)
    return {
        "request_id": f"b{i}",
        "user_id": f"u{rng.integers(N_USERS)}",
        "surface": "feed",
        "candidates": [f"i{j}" for j in items],
        "context": {"hour": int(i % 24)},
    }


def _client(port: int, count: int, seconds: float, rate: float, out: mp.Queue) -> None:
    rng = np.random.default_rng(1)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = json.dumps(_request(i, rng))
        t0 = time.perf_counter()
        conn.request("POST", "/v1/models/feed:predict", body=body)
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}")
        if time.perf_counter() - start > seconds:
            break
    out.put((lat, time.perf_counter() - start))


def _hog(stop: mp.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            x += 1


def _feature_writer(kafka: KafkaConfig, rate: float, stop: mp.Event) -> None:  # type: ignore[valid-type]
    """Keep the replica busy: ``rate`` user feature updates per second, in 10 ms bursts."""
    producer = make_producer(kafka)
    topic = Topics(kafka.topic_prefix).features
    i = 0
    start = time.perf_counter()
    while not stop.is_set():  # type: ignore[attr-defined]
        due = int((time.perf_counter() - start) * rate)
        for _ in range(due - i):
            u = i % N_USERS
            values = {"user_impressions": i, "user_ctr": 0.05, "user_last_event_ts": time.time()}
            rec = FeatureRecord(entity="user", id=f"u{u}", values=values, ts=0.0)
            produce(producer, topic, encode(rec), f"user/u{u}")
            i += 1
        producer.poll(0)
        time.sleep(0.01)
    flush(producer)


def _pcts(lat: list[float]) -> tuple[float, float]:
    a = np.asarray(lat) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=3000, help="HTTP requests at most")
    ap.add_argument("--seconds", type=float, default=30.0, help="HTTP phase time limit")
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s (0: back to back)")
    ap.add_argument("--hogs", type=int, default=0, help="busy CPU processes running alongside")
    ap.add_argument(
        "--feature-rate", type=float, default=0.0, help="feature records/s streamed meanwhile"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    spec = feed_spec()
    learner = zoo.create("ftrl", spec)
    rng = np.random.default_rng(0)
    rows = [
        {"user_id": f"u{rng.integers(N_USERS)}", "item_id": f"i{rng.integers(N_ITEMS)}"}
        for _ in range(20_000)
    ]
    learner.learn_many(rows, (rng.random(len(rows)) < 0.1).astype(float))
    registry = FileRegistry(tmp / "registry")
    registry.publish("feed", learner.snapshot())

    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap_servers, topic_prefix="bench.", partitions=4)
        topics = Topics(kafka.topic_prefix)
        ensure_topics(
            kafka,
            [topics.features, topics.feature_log, topics.predictions, topics.prediction_requests],
        )
        ensure_topics(kafka, [topics.model_updates], partitions=1)
        producer = make_producer(kafka)
        for u in range(N_USERS):
            values = {"user_impressions": u, "user_ctr": 0.05, "user_last_event_ts": time.time()}
            rec = FeatureRecord(entity="user", id=f"u{u}", values=values, ts=0.0)
            produce(producer, topics.features, encode(rec), f"user/u{u}")
        for i in range(N_ITEMS):
            values = {"item_impressions": i, "item_category": f"c{i % 7}", "item_ctr": 0.1}
            rec = FeatureRecord(entity="item", id=f"i{i}", values=values, ts=0.0)
            produce(producer, topics.features, encode(rec), f"item/i{i}")
        flush(producer)
        config = ServingConfig(
            port=0, registry_dir=registry.root, kafka=kafka, state_dir=tmp / "state"
        )
        with ServingApp(config) as app:
            deadline = time.monotonic() + 30
            while app.replica.records_applied < N_USERS + N_ITEMS and time.monotonic() < deadline:
                time.sleep(0.05)

            # Baselines in this process: raw session.run and the in-process service.
            sess = app.service.session("feed")
            reqs = [PredictionRequest(**_request(i, rng)) for i in range(1000)]  # type: ignore[arg-type]
            now = time.time()
            encoded = []
            for r in reqs:
                user = app.replica.user(r.user_id)
                feats = [
                    serving_features(r, c, user, app.replica.item(c), now) for c in r.candidates
                ]
                encoded.append(sess.featuriser.transform_many(feats))
            raw, svc = [], []
            for _ in range(3):
                for idx, val in encoded:
                    t0 = time.perf_counter()
                    sess._ort.run(["prob"], {"idx": idx, "val": val})
                    raw.append(time.perf_counter() - t0)
            for r in reqs:
                t0 = time.perf_counter()
                app.service.predict("feed", r)
                svc.append(time.perf_counter() - t0)

            stop = mp.Event()
            hogs = [mp.Process(target=_hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
            if args.feature_rate:
                hogs.append(
                    mp.Process(target=_feature_writer, args=(kafka, args.feature_rate, stop))
                )
            applied_before = app.replica.records_applied
            for h in hogs:
                h.start()
            out: mp.Queue = mp.Queue()
            client = mp.Process(
                target=_client, args=(app.port, args.count, args.seconds, args.rate, out)
            )
            client.start()
            lat, elapsed = out.get(timeout=args.seconds + 60)
            client.join()
            stop.set()
            for h in hogs:
                h.join()
            applied = app.replica.records_applied - applied_before
        del producer  # before the broker stops
    shutil.rmtree(tmp, ignore_errors=True)

    r50, r99 = _pcts(raw)
    s50, s99 = _pcts(svc)
    h50, h99 = _pcts(lat)
    print(
        f"serving bench: {N_CANDIDATES} candidates, hash_bits={spec.hash_bits}, "
        f"{len(lat)} HTTP requests in {elapsed:.1f}s ({len(lat) / elapsed:.0f} req/s, "
        f"target rate {args.rate or 'max'}), {args.hogs} CPU hog(s), "
        f"{applied} feature records applied meanwhile"
    )
    print(f"{'path':10s} {'p50 ms':>9s} {'p99 ms':>9s} {'p50/raw':>9s} {'p99/raw':>9s}")
    for name, p50, p99 in (("raw", r50, r99), ("service", s50, s99), ("http", h50, h99)):
        print(f"{name:10s} {p50:9.3f} {p99:9.3f} {p50 / r50:9.1f} {p99 / r99:9.1f}")
    print(f"http max {max(lat) * 1e3:.2f} ms; p99 budget 20 ms: {'OK' if h99 < 20 else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
