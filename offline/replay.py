"""Replay topic ranges into a Parquet dataset with a manifest.

How a range is read, and why (the embedded broker answers ListOffsets(latest) and
``offsets_for_times`` wrongly: docs/explanation/embedded-broker.md):

* Each (topic, partition) is read on its own, in (topic, partition) order, with
  ``Consumer.assign`` at an explicit offset — no group, no commits. Rows therefore land
  in (topic, partition, offset) order, and the same range always gives the same rows.
* **The end of a partition is never taken from ListOffsets(latest).** ``latest`` means
  the high watermark the broker reports *with a fetch*: the consumer runs with
  ``enable.partition.eof=true`` and a partition ends at its first end-of-partition
  event, whose offset is the fetch's high watermark. Records produced after that are
  not part of the replay; the manifest records the resolved end offset, so the same
  rows can be replayed again by offsets.
* **Timestamps are resolved by the replay itself.** A bound ``T`` is the first offset
  whose record timestamp is ``>= T`` (Kafka's semantics). ``offsets_for_times`` is
  asked first, but only as a seek hint (the embedded broker answers offset 0 for any
  time, so there the replay scans from the start of the partition); records before the
  start time are skipped, and an end time stops the partition at the first record at or
  after it.
* Rows are buffered in column lists and written one Parquet row group at a time, so
  memory stays bounded by ``row_group_rows`` whatever the range.
* A record that does not decode (or whose key is not UTF-8) is counted and written to
  ``rejected.jsonl`` with the error; it is still covered by the checksum.

The checksum is xxh3-128 over the format and schema, then every record of the range in
(topic, partition, offset) order: partition, offset, timestamp, key and value bytes.
"""

from __future__ import annotations

import base64
import logging
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow.parquet as pq
import xxhash
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from streamlearn.offline.dataset import (
    DATA_FILE,
    REJECTED_FILE,
    atomic_dir,
    schema_dict,
    write_manifest,
)
from streamlearn.offline.errors import OfflineError, RangeError
from streamlearn.offline.ranges import EARLIEST, LATEST, Bound, Bounds, check_range
from streamlearn.offline.records import RecordFormat, RowBuffer, resolve_format
from streamlearn.streams.catalog.events import EventSchema
from streamlearn.streams.errors import ContractError
from streamlearn.streams.kafka.clients import make_consumer
from streamlearn.streams.kafka.config import KafkaConfig

log = logging.getLogger(__name__)

_REC = struct.Struct("<qqii")
_NO_TS = -1


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: topics, bounds per partition, the record format."""

    topics: tuple[str, ...]
    start: Bounds = field(default_factory=lambda: Bounds(EARLIEST))
    end: Bounds = field(default_factory=lambda: Bounds(LATEST))
    format: str = "auto"
    #: The project's event contract, for the ``event`` format (``None``: any events).
    schema: EventSchema | None = None
    row_group_rows: int = 65_536
    batch_size: int = 10_000
    idle_timeout_s: float = 20.0


@dataclass
class PartitionRange:
    """The resolved range of one partition and what it held (``end_offset`` exclusive)."""

    topic: str
    partition: int
    requested_start: str
    requested_end: str
    start_offset: int = 0
    end_offset: int = 0
    records: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class ReplayProgress:
    """Reported after every consumed batch."""

    topic: str
    partition: int
    done: int
    total: int | None
    records: int


ProgressFn = Callable[[ReplayProgress], None]


class _Sink:
    """Parquet writer, rejected-record file and checksum of one replay."""

    def __init__(self, directory: Path, fmt: RecordFormat, row_group_rows: int) -> None:
        self.fmt = fmt
        self.buffer = RowBuffer(fmt)
        self.row_group_rows = row_group_rows
        self.writer = pq.ParquetWriter(directory / DATA_FILE, fmt.schema, compression="zstd")
        self.rejected: IO[bytes] = open(directory / REJECTED_FILE, "wb")  # noqa: SIM115
        self.hasher = xxhash.xxh3_128()
        self.hasher.update(orjson.dumps([fmt.name, schema_dict(fmt.schema)]))
        self.records = 0

    def begin(self, topic: str, partition: int) -> None:
        self.hasher.update(f"\0{topic}\0{partition}\0".encode())

    def add(
        self, rng: PartitionRange, offset: int, ts: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.hasher.update(
            _REC.pack(
                offset, ts, -1 if key is None else len(key), -1 if value is None else len(value)
            )
        )
        if key:
            self.hasher.update(key)
        if value:
            self.hasher.update(value)
        try:
            skey = None if key is None else key.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(rng, offset, ts, key, value, "bad_key", "expected a UTF-8 key")
            return
        try:
            decoded = self.fmt.decode(value)
        except ContractError as exc:
            self._reject(rng, offset, ts, key, value, exc.reason, str(exc))
            return
        self.buffer.append(
            (rng.topic, rng.partition, offset, None if ts == _NO_TS else ts, skey), decoded
        )
        rng.records += 1
        self.records += 1
        if len(self.buffer) >= self.row_group_rows:
            self.writer.write_batch(self.buffer.flush())

    def _reject(
        self,
        rng: PartitionRange,
        offset: int,
        ts: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
    ) -> None:
        rng.rejected += 1
        log.warning(
            "rejected topic=%s partition=%d offset=%d reason=%s: %s",
            rng.topic,
            rng.partition,
            offset,
            reason,
            error,
        )
        rec: dict[str, Any] = {
            "topic": rng.topic,
            "partition": rng.partition,
            "offset": offset,
            "timestamp": None if ts == _NO_TS else ts,
            "reason": reason,
            "error": error,
            "key": _text_or_b64(key),
            "value": _text_or_b64(value),
        }
        self.rejected.write(orjson.dumps(rec) + b"\n")

    def close(self) -> None:
        if len(self.buffer):
            self.writer.write_batch(self.buffer.flush())
        self.writer.close()
        self.rejected.close()


def _text_or_b64(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _timestamp(msg: Any) -> int:
    kind, ts = msg.timestamp()
    return _NO_TS if kind == 0 else int(ts)  # 0: TIMESTAMP_NOT_AVAILABLE


class _PartitionReader:
    """Reads one partition range into a sink (see the module docstring)."""

    def __init__(
        self, consumer: Consumer, spec: ReplaySpec, sink: _Sink, progress: ProgressFn | None
    ):
        self.consumer = consumer
        self.spec = spec
        self.sink = sink
        self.progress = progress

    def _seek_offset(self, topic: str, partition: int, start: Bound) -> int:
        if start.kind == "earliest":
            return OFFSET_BEGINNING
        if start.kind == "offset":
            return start.value
        tp = TopicPartition(topic, partition, start.value)
        hint = self.consumer.offsets_for_times([tp], timeout=10.0)[0]
        if hint.error is not None:
            raise RangeError(
                f"offsets_for_times failed for topic={topic} partition={partition}: {hint.error}"
            )
        # -1: no record at or after the time (a correct broker); then the range is empty.
        return OFFSET_END if hint.offset < 0 else hint.offset

    def read(self, topic: str, partition: int, start: Bound, end: Bound) -> PartitionRange:
        check_range(start, end, f"topic={topic} partition={partition}")
        rng = PartitionRange(topic, partition, str(start), str(end))
        self.sink.begin(topic, partition)
        seek = self._seek_offset(topic, partition, start)
        end_offset = end.value if end.kind == "offset" else None
        if start.kind == "offset" and end_offset is not None and end_offset <= seek:
            rng.start_offset = rng.end_offset = seek
            return rng
        self.consumer.assign([TopicPartition(topic, partition, seek)])
        try:
            self._consume(rng, start, end, end_offset)
        finally:
            self.consumer.unassign()
        return rng

    def _consume(
        self, rng: PartitionRange, start: Bound, end: Bound, end_offset: int | None
    ) -> None:
        tp = TopicPartition(rng.topic, rng.partition)
        first: int | None = start.value if start.kind == "offset" else None
        waiting = start.kind == "timestamp"
        idle_since = time.monotonic()
        done = 0
        while True:
            msgs = self.consumer.consume(self.spec.batch_size, 0.5)
            if not msgs:
                if time.monotonic() - idle_since > self.spec.idle_timeout_s:
                    raise OfflineError(
                        f"topic={rng.topic} partition={rng.partition}: no record and no "
                        f"end-of-partition within {self.spec.idle_timeout_s}s after offset "
                        f"{rng.start_offset + done}"
                    )
                continue
            idle_since = time.monotonic()
            stop: int | None = None
            for m in msgs:
                err = m.error()
                if err is not None:
                    stop = self._on_error(rng, err, int(m.offset() or 0), end_offset)
                    if stop is None:
                        continue
                    break
                offset = int(m.offset() or 0)
                if end_offset is not None and offset >= end_offset:
                    stop = end_offset
                    break
                ts = _timestamp(m)
                if waiting:
                    if ts < start.value:
                        continue
                    waiting = False
                if end.kind == "timestamp" and ts >= end.value:
                    stop = offset
                    break
                if first is None:
                    first = offset
                self.sink.add(rng, offset, ts, m.key(), m.value())
                done += 1
            if self.progress is not None:
                total = None if end_offset is None or first is None else end_offset - first
                self.progress(
                    ReplayProgress(rng.topic, rng.partition, done, total, self.sink.records)
                )
            if stop is not None:
                rng.start_offset = stop if first is None else first
                rng.end_offset = stop
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                log.debug(
                    "topic=%s partition=%d range [%d, %d) watermarks (%d, %d)",
                    rng.topic,
                    rng.partition,
                    rng.start_offset,
                    stop,
                    lo,
                    hi,
                )
                return

    @staticmethod
    def _on_error(rng: PartitionRange, err: Any, offset: int, end_offset: int | None) -> int | None:
        """The end offset when ``err`` ends the partition; ``None`` for a transient error."""
        if err.code() == KafkaError._PARTITION_EOF:
            if end_offset is not None and offset < end_offset:
                log.warning(
                    "topic=%s partition=%d: requested end offset %d is past the end of the "
                    "partition; replayed up to offset %d",
                    rng.topic,
                    rng.partition,
                    end_offset,
                    offset,
                )
            return int(offset)
        if err.code() == KafkaError._AUTO_OFFSET_RESET:
            raise RangeError(
                f"topic={rng.topic} partition={rng.partition}: start {rng.requested_start} is "
                f"outside the partition's offsets: {err.str()}"
            )
        if err.fatal() or not err.retriable():
            raise OfflineError(f"consume failed topic={rng.topic} partition={rng.partition}: {err}")
        log.warning(
            "transient consumer error topic=%s partition=%d: %s", rng.topic, rng.partition, err
        )
        return None


def _partitions(consumer: Consumer, topic: str, bounds: list[Bounds]) -> list[int]:
    md = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        why = "unknown topic" if md is None or md.error is None else md.error
        raise RangeError(f"expected topic={topic} to exist with partitions, got: {why}")
    parts = sorted(md.partitions)
    for b in bounds:
        unknown = sorted(set(b.per_partition) - set(parts))
        if unknown:
            raise RangeError(f"topic={topic} has partitions {parts}, got bounds for {unknown}")
    return parts


def replay(
    config: KafkaConfig,
    spec: ReplaySpec,
    out: Path,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Replay ``spec`` into the dataset directory ``out``; return its manifest."""
    if not spec.topics:
        raise RangeError("expected at least one topic to replay, got none")
    fmt = resolve_format(spec.format, spec.topics, spec.schema)
    consumer = make_consumer(
        config,
        f"streamlearn-replay-{uuid.uuid4().hex[:12]}",
        **{"enable.partition.eof": True, "auto.offset.reset": "error"},
    )
    started = time.monotonic()
    ranges: list[PartitionRange] = []
    try:
        with atomic_dir(Path(out), overwrite) as tmp:
            sink = _Sink(tmp, fmt, spec.row_group_rows)
            try:
                reader = _PartitionReader(consumer, spec, sink, progress)
                for topic in spec.topics:
                    for p in _partitions(consumer, topic, [spec.start, spec.end]):
                        rng = reader.read(
                            topic, p, spec.start.for_partition(p), spec.end.for_partition(p)
                        )
                        ranges.append(rng)
                        log.info(
                            "replayed topic=%s partition=%d offsets [%d, %d): %d rows, %d rejected",
                            topic,
                            p,
                            rng.start_offset,
                            rng.end_offset,
                            rng.records,
                            rng.rejected,
                        )
            finally:
                sink.close()
            manifest = {
                "kind": "replay",
                "topics": list(spec.topics),
                "format": fmt.name,
                "partitions": [asdict(r) for r in ranges],
                "records": sum(r.records for r in ranges),
                "rejected": sum(r.rejected for r in ranges),
                "schema": schema_dict(fmt.schema),
                "checksum": "xxh3_128:" + sink.hasher.hexdigest(),
                "files": {"data": DATA_FILE, "rejected": REJECTED_FILE},
                "created_at": datetime.now(UTC).isoformat(),
                "seconds": round(time.monotonic() - started, 3),
            }
            write_manifest(tmp, manifest)
    finally:
        consumer.close()
    return manifest
