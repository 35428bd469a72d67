"""A team's own project, written outside the package, run by ``streamlearn up``.

The project declares its own event types (``view``, ``add_to_cart``), surface
(``search``), an entity keyed by an event field (``query``), a feature on it and a model;
``up --project`` runs it on the embedded broker, fed by ``--log`` (``produce --log``).
Read back from outside: its events are accepted and an undeclared type is dead-lettered
with the declared list; the query feature equals a count made from the log; its model
publishes versions learned from the log's impressions (which serving never scored), and
serving answers ``/v1`` and the Open Inference Protocol for it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.streams.kafka.broker import EmbeddedBroker, free_port
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import Topics
from tests.integration.reading import read_all
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.integration
DURATION = 50

PROJECT = """
from streamlearn.project import (
    Count, Entity, Events, Feature, Field, Head, Model, Project, WindowedCount,
)

project = Project(
    name="shop",
    events=Events(impressions=["view"], engagements=["add_to_cart"]),
    surfaces=["search"],
    fields=[Field("query", "str", "What the user searched for.")],
    entities=[Entity("query", key="query")],
    features=[
        Feature("query_carts", "query", Count(["add_to_cart"]), "Carts after this query."),
        Feature("query_views", "query", Count(["view"]), "Items shown for this query."),
        Feature("item_carts_1h", "item", WindowedCount(["add_to_cart"], 3600), "Carts, 1 h."),
    ],
    heads=[Head("cart", positives=["add_to_cart"], window_s=20.0)],
    models=[
        Model(
            "search",
            head="cart",
            surfaces=["search"],
            features=["query", "item_id", "query_carts", "query_views", "item_carts_1h"],
            crosses=[("query", "item_id")],
        )
    ],
)
"""


def _write_log(path: Path, requests: int = 600) -> Counter[str]:
    """Searches (4 items viewed each) and carts; an item whose number matches the query's
    is carted (unless shown last). Returns the carts per query."""
    carts: Counter[str] = Counter()
    t0 = 1_767_225_600.0
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ts", "type", "user_id", "item_id", "surface", "query", "request_id"])
        for r in range(requests):
            ts, query, user = t0 + 3.0 * r, f"q{r % 7}", f"u{r % 40}"
            shown = [(pos, f"i{(r + pos) % 12}") for pos in range(4)]
            for _, item in shown:
                out.writerow([ts, "view", user, item, "search", query, f"r{r}"])
            for pos, item in shown:
                if (r + pos) % 12 % 7 == r % 7 and pos < 3:
                    out.writerow([ts + 2.0, "add_to_cart", user, item, "search", query, f"r{r}"])
                    carts[query] += 1
    return carts


def _get(url: str) -> Any:
    try:
        r = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def test_a_project_of_its_own_runs_through_the_loop(broker: EmbeddedBroker, tmp_path: Path) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "project.py").write_text(PROJECT)
    log = tmp_path / "history.csv"
    carts = _write_log(log)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaConfig(broker.bootstrap_servers, prefix, partitions=4)
    topics = Topics(prefix)
    data = tmp_path / "var"
    port = free_port()
    summary_path = tmp_path / "s.json"
    up = subprocess.Popen(
        [
            sys.executable, "-m", "streamlearn", "up",
            "--project", str(project),
            "--log", str(log),
            "--duration", str(DURATION),
            "--bootstrap-servers", broker.bootstrap_servers,
            "--topic-prefix", prefix,
            "--data-dir", str(data),
            "--serving-port", str(port),
            "--snapshot-interval", "3",
            "--summary-json", str(summary_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # a producer that does not know the project: an undeclared type is dead-lettered
        producer = make_producer(kafka)
        bad = {
            "event_id": "x1",
            "type": "click",
            "ts": 1_767_225_600.0,
            "user_id": "u1",
            "item_id": "i1",
            "surface": "search",
            "request_id": "rx",
        }
        wait_for(lambda: _get(f"{url}/healthz") is not None, 60, "serving")
        produce(producer, topics.activity, orjson.dumps(bad), "u1")
        flush(producer)

        # the query feature, read online, equals the count made from the log
        def feature_matches() -> bool:
            got = _get(f"{url}/v1/features/query/q3")
            return got is not None and got["values"]["query_carts"] == carts["q3"]

        wait_for(feature_matches, DURATION, "query_carts of q3 to equal the log's count")
        listing = _get(f"{url}/v1/features")
        assert {f["name"] for f in listing["features"]} == {
            "query_carts",
            "query_views",
            "item_carts_1h",
        }

        # the model learned from the log is served: /v1 and the Open Inference Protocol
        registry = FileRegistry(data / "registry")
        wait_for(lambda: len(registry.versions("search")) >= 2, DURATION, "versions of search")
        request = {
            "request_id": "q",
            "user_id": "u1",
            "surface": "search",
            "candidates": ["i3", "i4", "i5"],
            "context": {"query": "q3"},
        }

        def predicted() -> Any:
            r = httpx.post(f"{url}/v1/models/search:predict", json=request, timeout=5.0)
            return r.json() if r.status_code == 200 else None

        reply = wait_for(predicted, 30, "a /v1 prediction of search")
        assert reply["model"] == "search" and len(reply["scores"]) == 3
        oip = httpx.post(
            f"{url}/v2/models/search/infer",
            json={
                "inputs": [
                    {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]},
                    {"name": "surface", "shape": [1], "datatype": "BYTES", "data": ["search"]},
                    {"name": "candidates", "shape": [2], "datatype": "BYTES", "data": ["i3", "i4"]},
                ]
            },
            timeout=5.0,
        )
        assert oip.status_code == 200, oip.text
        assert oip.json()["model_name"] == "search"
        meta = _get(f"{url}/v2/models/search")
        assert meta is not None and meta["name"] == "search"
        # a surface the project does not declare is refused with the declared list
        wrong = httpx.post(
            f"{url}/v1/models/search:predict", json={**request, "surface": "home"}, timeout=5.0
        )
        assert wrong.status_code == 400 and "['search']" in wrong.json()["error"]
        out, _ = up.communicate(timeout=DURATION + 120)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, out.decode()[-3000:]
    s = json.loads(summary_path.read_text())
    assert s["project"] == "shop"
    views = sum(1 for line in log.read_text().splitlines() if ",view," in line)
    total = sum(1 for _ in log.read_text().splitlines()) - 1
    # every event of the log accepted and processed; the stray one dead-lettered
    assert s["events_produced"] == s["events_processed"] == total and s["dlq_events"] == 1, s
    dlq = read_all(kafka, topics.dlq(topics.activity))
    assert len(dlq) == 1
    headers = {k: (v or b"").decode() for k, v in dlq[0].headers() or []}
    assert "expected type in ['add_to_cart', 'view'], got 'click'" in headers["error"]
    # every impression of the log became one example (none served), learned once
    m = s["models"]["search"]
    assert m["examples_trained"] == views, m
    assert m["progressive_auc"] is not None and m["progressive_auc"] > 0.7, m
    examples = read_all(kafka, topics.training_examples("search"))
    decoded = [orjson.loads(e.value() or b"{}") for e in examples]
    assert len(decoded) == views and not any(e["served"] for e in decoded)
    assert all("query_carts" in e["features"] for e in decoded)
