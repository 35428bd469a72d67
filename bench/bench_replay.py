"""Replay throughput (records/s) against a raw confluent-kafka consume loop, same range.

    python bench/bench_replay.py [--records 200000] [--partitions 4]

Starts the embedded broker, fills one activity topic, then times (1) a bare
``Consumer.assign`` + ``consume(10000)`` loop that touches every value, reading each
partition to its end-of-partition event, and (2) ``streamlearn.offline.replay.replay`` of the same
range into Parquet (decode, validate, checksum, write). Prints both rates and the ratio;
machines here are noisy, so only the ratio measured in one run means much.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streamlearn.offline.replay import ReplaySpec, replay
from streamlearn.streams.kafka.broker import EmbeddedBroker
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import ensure_topics


def fill(bootstrap: str, topic: str, n: int) -> None:
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
    )
    for i in range(n):
        ev = {
            "event_id": f"e{i}",
            "type": "impression",
            "ts": 1.7e9 + i / 1000,
            "user_id": f"u{i % 5000}",
            "item_id": f"i{i % 997}",
            "surface": "feed",
            "request_id": f"r{i}",
            "position": i % 10,
            "context": {"country": "fr", "device": "ios"},
        }
        while True:
            try:
                p.produce(topic, json.dumps(ev).encode(), key=ev["user_id"])
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def raw_consume(config: KafkaConfig, topic: str, partitions: int) -> int:
    c = Consumer(config.consumer_conf("bench-raw", **{"enable.partition.eof": True}))
    n = 0
    for part in range(partitions):
        c.assign([TopicPartition(topic, part, 0)])
        done = False
        while not done:
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is not None:
                    done = err.code() == KafkaError._PARTITION_EOF
                    if done:
                        break
                    continue
                n += m.value() is not None
        c.unassign()
    c.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        config = KafkaConfig(broker.bootstrap_servers)
        topic = "bench.activity"
        ensure_topics(config, [topic], partitions=args.partitions)
        fill(broker.bootstrap_servers, topic, args.records)

        t0 = time.perf_counter()
        n_raw = raw_consume(config, topic, args.partitions)
        raw_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        manifest = replay(config, ReplaySpec((topic,)), Path(tmp) / "ds")
        replay_s = time.perf_counter() - t0

    assert n_raw == manifest["records"] == args.records, (n_raw, manifest["records"])
    raw_rate, replay_rate = n_raw / raw_s, manifest["records"] / replay_s
    print(f"records            {args.records}")
    print(f"raw consume loop   {raw_rate:12,.0f} records/s  ({raw_s:.2f} s)")
    print(f"replay → Parquet   {replay_rate:12,.0f} records/s  ({replay_s:.2f} s)")
    print(f"replay / raw       {replay_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
