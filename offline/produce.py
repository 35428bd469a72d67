"""Produce a dataset (replayed Parquet, JSONL or CSV) into a topic, rate limited.

For backfills, staging and load tests. Each record becomes one JSON message keyed by
``key_field`` (``user_id`` by default, as every activity topic is keyed):

* **Parquet** from ``streamlearn replay``: the record is rebuilt from the decoded
  columns (source columns ``topic, partition, offset, timestamp, key`` dropped; JSON
  columns ``context``/``features`` parsed back; ``json`` datasets send ``value`` as is).
  Any other Parquet table: one record per row, its columns as fields.
* **JSONL**: one JSON object per line, sent as it is written.
* **CSV**: one record per row; a cell that reads as an int or a float becomes a number
  (unless ``numbers=False``: every cell stays text), an empty cell is left out.

Memory is bounded: files are streamed in batches and the producer's queue is bounded.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamlearn.offline.dataset import MANIFEST_FILE, iter_batches, parquet_files, read_manifest
from streamlearn.offline.errors import DatasetError, OfflineError
from streamlearn.offline.records import SOURCE_COLUMNS
from streamlearn.streams.kafka.clients import flush, make_producer, produce
from streamlearn.streams.kafka.config import KafkaConfig
from streamlearn.streams.kafka.topics import ensure_topics

log = logging.getLogger(__name__)

_JSON_COLUMNS = ("context", "features")


class RateLimiter:
    """Token bucket: at most ``rate`` records per second, bursts up to ``burst``.

    ``rate <= 0`` means unlimited. ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: int = 1) -> None:
        """Block until ``n`` records may be sent."""
        if self.rate <= 0:
            return
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            need = min(n, self.burst) - 1e-9  # float slack: a tiny deficit must not spin
            if self._tokens >= need:
                self._tokens -= n
                return
            self._sleep((min(n, self.burst) - self._tokens) / self.rate)


def number(cell: str) -> Any:
    """A CSV cell as an int or a float when it reads as one, else the text."""
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return cell


def _csv_records(path: Path, numbers: bool) -> Iterator[dict[str, Any]]:
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            yield {
                k: number(v) if numbers else v for k, v in row.items() if k and v not in (None, "")
            }


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: expected a JSON object per line: {exc}") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            yield rec


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    fmt = None
    if path.is_dir() and (path / MANIFEST_FILE).exists():
        fmt = read_manifest(path).get("format")
    for batch in iter_batches(path):
        for row in batch.to_pylist():
            if fmt == "json":
                value = orjson.loads(row["value"])
                yield value if isinstance(value, dict) else {"value": value}
                continue
            rec = {k: v for k, v in row.items() if k not in SOURCE_COLUMNS or fmt is None}
            for col in _JSON_COLUMNS:
                if isinstance(rec.get(col), str):
                    rec[col] = orjson.loads(rec[col])
            yield {k: v for k, v in rec.items() if v is not None}


def read_records(path: Path, numbers: bool = True) -> Iterator[dict[str, Any]]:
    """Records of a dataset directory, a ``.parquet``, ``.jsonl``/``.json`` or ``.csv`` file;
    ``numbers=False`` keeps a CSV's cells as text (the reader types them)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"expected a dataset at {path}, found nothing")
    if path.is_dir() or path.suffix == ".parquet":
        parquet_files(path)  # fails early with a clear message
        return _parquet_records(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return _jsonl_records(path)
    if path.suffix == ".csv":
        return _csv_records(path, numbers)
    raise DatasetError(f"expected a .parquet, .jsonl or .csv file or a dataset dir, got {path}")


@dataclass(frozen=True)
class ProduceResult:
    """What a re-publish did."""

    topic: str
    records: int
    unkeyed: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records per second achieved."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def produce_file(
    config: KafkaConfig,
    source: Path,
    topic: str,
    *,
    key_field: str = "user_id",
    rate: float = 0.0,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProduceResult:
    """Send the records of ``source`` to ``topic`` (created if missing); see the module doc."""
    records = read_records(source)
    ensure_topics(config, [topic])
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = make_producer(config)
    limiter = RateLimiter(rate)
    sent = unkeyed = 0
    started = time.monotonic()
    for rec in records:
        if limit is not None and sent >= limit:
            break
        key = rec.get(key_field)
        if key is None:
            unkeyed += 1
        limiter.acquire()
        value = orjson.dumps(rec)
        produce(producer, topic, value, None if key is None else str(key), on_delivery=on_delivery)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(sent)
    flush(producer)
    if progress is not None:
        progress(sent)
    if failures:
        raise OfflineError(
            f"{len(failures)} of {sent} records to topic={topic} failed: {failures[0]}"
        )
    if unkeyed:
        log.warning(
            "topic=%s: %d records had no %r field and were sent without a key",
            topic,
            unkeyed,
            key_field,
        )
    return ProduceResult(topic, sent, unkeyed, time.monotonic() - started)
