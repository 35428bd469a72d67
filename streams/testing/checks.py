"""The checks every stream processor passes, without a broker (like ``streamlearn.models.checks``).

A ``Scenario`` says how to build a processor and what records to produce for it. Every check runs it
through the real ``MicroBatchRuntime`` on a ``streamlearn.streams.testing.memory.MemoryBroker``,
then compares an *observation* of the result (``Scenario.observe``: latest output per key,
dead letters per source offset, the stores' contents and offsets, a snapshot's counts and
predictions) with a clean, uninterrupted run:

- ``check_discard_then_retry``: a batch fails once (a store processor has applied it
  when it raises; a snapshot processor raises before, its ``process`` being
  all-or-nothing); the runtime discards, rewinds and retries record by record.
- ``check_restart_from_stored_offsets``: half the input, a clean stop, a new processor
  on the same state directory with the rest of the input. The group's committed offsets
  are moved to the end of the input first, to prove they are not used.
- ``check_restore_from_changelog``: the local stores are deleted; a new processor
  restores them from the changelog, offsets and topic ids included (store processors),
  or reloads the snapshot (snapshot processors), and equals what was lost.
- ``check_crash_at_every_step``: a kill -9 (``Crash``: nothing more runs, the producer's
  unacknowledged buffer is lost) at the first, a middle and the last occurrence of every
  step of the commit sequence (``process``, ``produce``, ``flush``, ``state-commit``,
  ``consumer-commit``), then a restart: nothing is lost, nothing applied twice.
- ``check_zombie``: a worker frozen past its session time-out (``MemoryBroker.freeze``) at
  the first, a middle and the last occurrence of every step; meanwhile another worker,
  with a state directory of its own, is given the partitions and processes everything.
  Thawed, the frozen one writes nothing more (its commit is refused, what it had queued
  expired); restarted, everything equals the clean run.
- ``check_new_cluster``: the same state directory against a new cluster (new topic ids):
  stale state is rebuilt (a new lineage for a snapshot processor) and the result equals
  a run on the new cluster alone (``Scenario.carried`` names the observation keys a
  snapshot processor carries over, its learned weights).

And one over two processors: ``check_learned_once`` crashes the joiner at every step,
then has the online trainer learn what it emitted (and copies of some examples, as a
late writer would add): the topic holds each (request, item) once, and the trainer
learns each once.

``yield_checks`` lists them; ``tests/unit/streams/test_checks.py`` runs every check on
every processor.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamlearn.streams.contracts import decode_example
from streamlearn.streams.errors import StreamsError
from streamlearn.streams.learning.dedup import example_ids
from streamlearn.streams.learning.trainer import OnlineTrainer
from streamlearn.streams.runtime.microbatch import MicroBatchRuntime, RuntimeConfig
from streamlearn.streams.runtime.processor import (
    BatchProcessor,
    Output,
    Processor,
    Record,
    RecordBatch,
    StoreProcessor,
    TopicPartitionKey,
)
from streamlearn.streams.state.store import PartitionStore
from streamlearn.streams.testing.memory import Crash, Faults, MemoryBroker

log = logging.getLogger(__name__)

#: Builds the processor under test: (state root, cluster, clock) → processor.
Build = Callable[[Path, MemoryBroker, Callable[[], float]], Processor]
#: Publishes part ``i`` (0 or 1) of the input into the broker.
Produce = Callable[[MemoryBroker, int], None]
#: What must be equal between runs: (broker, state root) → named values.
Observe = Callable[[MemoryBroker, Path], dict[str, Any]]
#: Creates the scenario's topics on a (new) broker.
Setup = Callable[[MemoryBroker], None]


@dataclass(frozen=True)
class Scenario:
    """A processor under test and its input."""

    name: str
    build: Build
    setup: Setup
    produce: Produce
    observe: Observe
    group_id: str = "checks"
    batch_size: int = 16
    #: In ticks of the fake clock, which moves one second per reading.
    commit_interval_s: float = 4.0
    #: Observation keys a new lineage keeps from the old cluster (learned weights).
    carried: frozenset[str] = field(default_factory=frozenset)
    #: A snapshot processor's in-memory state, compared after a reload from its snapshot.
    memory: Callable[[Processor], dict[str, Any]] | None = None


class FakeClock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, start: float = 1_000_000.0, step: float = 1.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class StillTime:
    """A monotonic clock that stands still, but for a freeze (``advance``): the runtime's
    lease (``streamlearn.streams.runtime.checkpoint``) runs out only across a freeze."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (a SIGSTOP)."""
        self.now += seconds


class _Injected(RuntimeError):
    """The failure ``check_discard_then_retry`` injects."""


class _Faulty:
    """Wraps a processor: counts steps for ``Faults``, fails one ``process`` call once."""

    def __init__(self, inner: Processor, faults: Faults, fail_call: int | None = None) -> None:
        self._inner = inner
        self._faults = faults
        self._fail_call = fail_call
        self._calls = 0
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def process(self, records: list[Record]) -> list[Output]:
        self._step()
        if self._fails():
            if isinstance(self._inner, StoreProcessor):
                self._inner.process(records)  # state changed half-way, then it fails
            raise _Injected(f"injected failure of process call #{self._calls}")
        return self._inner.process(records)

    def _step(self) -> None:
        self._faults.hit("process")
        self._calls += 1

    def _fails(self) -> bool:
        if self._calls == self._fail_call and not self.failed:
            self.failed = True
            return True
        return False


class _FaultyStore(_Faulty):
    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self._faults.hit("state-commit")
        self._inner.commit(offsets)  # type: ignore[attr-defined]


class _FaultySnapshot(_Faulty):
    def advance(self, offsets: dict[TopicPartitionKey, int]) -> list[Output]:
        self._faults.hit("state-commit")
        return self._inner.advance(offsets)  # type: ignore[attr-defined]


class _FaultyBatches(_FaultySnapshot):
    def process_batch(self, batch: RecordBatch) -> list[Output]:
        self._step()
        if self._fails():
            raise _Injected(f"injected failure of process call #{self._calls}")
        return self._inner.process_batch(batch)  # type: ignore[attr-defined]


def _wrap(proc: Processor, faults: Faults, fail_call: int | None = None) -> Processor:
    cls: type[_Faulty] = _FaultyStore if isinstance(proc, StoreProcessor) else _FaultySnapshot
    if isinstance(proc, BatchProcessor):
        if cls is _FaultyStore:
            raise TypeError("the checks wrap batch processors that are snapshot processors")
        cls = _FaultyBatches
    return cls(proc, faults, fail_call)


def run(
    scenario: Scenario,
    broker: MemoryBroker,
    root: Path,
    clock: FakeClock,
    fail_call: int | None = None,
    monotonic: StillTime | None = None,
) -> bool:
    """Run the scenario's processor until its input is drained; False if it crashed."""
    proc = _wrap(scenario.build(root, broker, clock), broker.faults, fail_call)
    rt = MicroBatchRuntime(
        proc,
        broker,
        RuntimeConfig(
            scenario.group_id,
            batch_size=scenario.batch_size,
            commit_interval_s=scenario.commit_interval_s,
        ),
        clock=clock,
        monotonic=monotonic or StillTime(),
    )
    try:
        rt.run(idle_polls=3, max_seconds=60)
    except Crash:
        broker.crash(delivered=0.5)
        return False
    return True


#: RocksDB creates and fsyncs several files per store; on tmpfs that is ~15× faster.
_TMPFS = Path("/dev/shm")


@contextmanager
def _tmpdir() -> Iterator[Path]:
    base = str(_TMPFS) if _TMPFS.is_dir() and os.access(_TMPFS, os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="streams-checks-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _fresh(scenario: Scenario, faults: Faults | None = None) -> MemoryBroker:
    broker = MemoryBroker(faults=faults)
    scenario.setup(broker)
    return broker


def clean_run(scenario: Scenario, root: Path) -> tuple[MemoryBroker, dict[str, Any]]:
    """Both parts of the input, one uninterrupted run: the reference."""
    broker = _fresh(scenario)
    scenario.produce(broker, 0)
    scenario.produce(broker, 1)
    if not run(scenario, broker, root, FakeClock()):
        raise AssertionError(f"{scenario.name}: the clean run crashed")
    return broker, scenario.observe(broker, root)


def _assert_same(scenario: Scenario, what: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            raise AssertionError(
                f"{scenario.name}: {what}: {key!r} differs from the clean run:\n"
                f"  got:      {_short(got.get(key))}\n  expected: {_short(want.get(key))}"
            )


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 600 else s[:600] + "…"


def check_discard_then_retry(scenario: Scenario) -> None:
    """A batch failing once (first batch, and one with uncommitted batches before it)
    changes nothing."""
    with _tmpdir() as d:
        _, want = clean_run(scenario, d / "clean")
        for call in (1, 3):
            broker = _fresh(scenario)
            scenario.produce(broker, 0)
            scenario.produce(broker, 1)
            root = d / f"fail{call}"
            if not run(scenario, broker, root, FakeClock(), fail_call=call):
                raise AssertionError(f"{scenario.name}: crashed instead of retrying")
            got = scenario.observe(broker, root)
            _assert_same(scenario, f"process call #{call} failed once", got, want)


def check_restart_from_stored_offsets(scenario: Scenario) -> None:
    """A clean stop half-way and a restart equals one run, and so does a restart with
    its state directory lost (rebuilt from the changelog, or the input read again),
    whatever offsets the consumer group committed."""
    with _tmpdir() as d:
        _, want = clean_run(scenario, d / "clean")
        broker = _fresh(scenario)
        root = d / "restarted"
        scenario.produce(broker, 0)
        clock = FakeClock()
        run(scenario, broker, root, clock)
        scenario.produce(broker, 1)
        _commit_ends(broker, scenario.group_id)
        run(scenario, broker, root, clock)
        _assert_same(scenario, "restart", scenario.observe(broker, root), want)
        # the state directory is lost; the group claims everything was processed
        lost = d / "lost"
        shutil.copytree(root, lost)
        for path in lost.iterdir():
            shutil.rmtree(path)
        _commit_ends(broker, scenario.group_id)
        run(scenario, broker, lost, FakeClock())
        _assert_same(scenario, "restart without state", scenario.observe(broker, lost), want)


def _commit_ends(broker: MemoryBroker, group_id: str) -> None:
    """Make the group's committed offsets claim every input record was processed."""
    group = broker.group(group_id)
    for name in list(broker.topic_names()):
        for p, log in enumerate(broker.topic(name).logs):
            group.committed[(name, p)] = len(log)


def _dump(store_root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(store_root.glob("p*")):
        s = PartitionStore(path, int(path.name[1:]))
        try:
            out[path.name] = (s.items(), s.offsets(), s.identity(), s.meta())
        finally:
            s.close()
    return out


def check_restore_from_changelog(scenario: Scenario) -> None:
    """Lost local state comes back equal: deleted stores from the changelog, offsets and
    topic ids included (store processors); a snapshot processor's memory from its
    snapshot (``Scenario.memory`` of the reloaded processor equals the lost one's)."""
    with _tmpdir() as d:
        root = d / "run"
        broker = _fresh(scenario)
        scenario.produce(broker, 0)
        scenario.produce(broker, 1)
        clock = FakeClock()
        lost = scenario.build(root, broker, clock)
        rt = MicroBatchRuntime(
            lost,
            broker,
            RuntimeConfig(scenario.group_id, batch_size=scenario.batch_size),
            clock=clock,
        )
        rt.run(idle_polls=3, max_seconds=60)
        proc = scenario.build(root, broker, FakeClock())
        tps = [(t, p) for t in proc.inputs() for p in range(len(broker.topic(t).logs))]
        if isinstance(proc, StoreProcessor):
            store_root = proc.state.root  # type: ignore[attr-defined]  # StatefulProcessor
            before = _dump(store_root)
            shutil.rmtree(store_root)
            starts = proc.assign(tps)
            proc.close()
            after = _dump(store_root)
            if after != before:
                diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                raise AssertionError(f"{scenario.name}: restored stores differ in {diff}")
            for (t, p), off in starts.items():
                stored = before.get(f"p{p:04d}", ([], {}, None, {}))[1].get(t)
                if stored is not None and off != stored:
                    raise AssertionError(
                        f"{scenario.name}: restored topic={t} partition={p} resumes at {off}, "
                        f"the lost store was at {stored}"
                    )
            return
        if scenario.memory is None:
            raise AssertionError(f"{scenario.name}: a snapshot processor needs Scenario.memory")
        proc.assign(tps)
        _assert_same(scenario, "reloaded snapshot", scenario.memory(proc), scenario.memory(lost))
        proc.close()


#: Steps of the commit sequence a crash is injected at.
STEPS = ("process", "produce", "flush", "state-commit", "consumer-commit")


def check_crash_at_every_step(scenario: Scenario) -> dict[str, int]:
    """A kill -9 at the first, a middle and the last occurrence of every step, then a
    restart: the result equals the clean run. Returns the crashes survived per step."""
    survived: dict[str, int] = {}
    with _tmpdir() as d:
        counting = Faults()
        _, want = clean_run(scenario, d / "clean")
        # count the steps of a run
        broker = _fresh(scenario, counting)
        scenario.produce(broker, 0)
        scenario.produce(broker, 1)
        run(scenario, broker, d / "count", FakeClock())
        for step in STEPS:
            n = counting.counts[step]
            if n == 0:
                raise AssertionError(f"{scenario.name}: the run has no {step!r} step")
            for k in sorted({1, (n + 1) // 2, n}):
                for lose_state in (False, True):
                    if lose_state and not isinstance(
                        scenario.build(d / "probe", MemoryBroker(), FakeClock()), StoreProcessor
                    ):
                        continue
                    faults = Faults(at=(step, k))
                    broker = _fresh(scenario, faults)
                    scenario.produce(broker, 0)
                    scenario.produce(broker, 1)
                    root = d / f"{step}-{k}-{lose_state}"
                    clock = FakeClock()
                    if run(scenario, broker, root, clock):
                        raise AssertionError(f"{scenario.name}: no crash at {step} #{k}")
                    what = f"crash at {step} #{k}"
                    if lose_state:  # and the store with it: restored from the changelog
                        shutil.rmtree(root / "state", ignore_errors=True)
                        what += ", local state lost"
                    broker.faults = Faults()
                    run(scenario, broker, root, clock)
                    _assert_same(scenario, what, scenario.observe(broker, root), want)
                    survived[step] = survived.get(step, 0) + 1
    return survived


def check_zombie(scenario: Scenario) -> dict[str, int]:
    """A worker frozen past its session time-out at the first, a middle and the last
    occurrence of every step, while another worker processes its partitions: thawed, it
    writes nothing (it stops with ``Fenced`` or a failed delivery, or rejoins); then
    (restarted) everything equals the clean run. Returns the freezes survived per step."""
    survived: dict[str, int] = {}
    with _tmpdir() as d:
        _, want = clean_run(scenario, d / "clean")
        counting = Faults()
        broker = _fresh(scenario, counting)
        scenario.produce(broker, 0)
        scenario.produce(broker, 1)
        run(scenario, broker, d / "count", FakeClock())
        for step in STEPS:
            n = counting.counts[step]
            for k in sorted({1, (n + 1) // 2, n}):
                broker = _fresh(scenario)
                scenario.produce(broker, 0)
                scenario.produce(broker, 1)
                root = d / f"{step}-{k}"
                time = StillTime()
                froze: list[bool] = []
                freeze = _taken_over(scenario, broker, root / "other", time, froze)
                broker.faults = Faults(pause_at=(step, k), pause=freeze)
                what = f"frozen at {step} #{k}"
                try:
                    run(scenario, broker, root, FakeClock(), monotonic=time)
                except StreamsError as exc:  # Fenced, an undelivered record or claim
                    log.info("%s: %s: the frozen worker stopped: %s", scenario.name, what, exc)
                if not froze:
                    raise AssertionError(f"{scenario.name}: never {what}")
                run(scenario, broker, root, FakeClock())  # restarted (or continued)
                _assert_same(scenario, what, scenario.observe(broker, root), want)
                survived[step] = survived.get(step, 0) + 1
    return survived


def _taken_over(
    scenario: Scenario, broker: MemoryBroker, other: Path, time: StillTime, froze: list[bool]
) -> Callable[[], None]:
    """What happens while a worker is frozen past its session time-out: it is evicted,
    what it queued expires, an hour passes, and another worker (state in ``other``) is
    given every partition and processes everything."""

    def freeze() -> None:
        broker.freeze()
        time.advance(3600.0)
        froze.append(True)
        if not run(scenario, broker, other, FakeClock()):
            raise AssertionError(f"{scenario.name}: the other worker crashed")

    return freeze


def check_new_cluster(scenario: Scenario) -> None:
    """The same state directory against a new cluster: stale state is never trusted."""
    with _tmpdir() as d:
        only_b = d / "only-b"
        broker_b = _fresh(scenario)
        scenario.produce(broker_b, 1)
        run(scenario, broker_b, only_b, FakeClock())
        want = scenario.observe(broker_b, only_b)

        root = d / "a-then-b"
        broker_a = _fresh(scenario)
        scenario.produce(broker_a, 0)
        scenario.produce(broker_a, 1)
        run(scenario, broker_a, root, FakeClock())
        broker_b = _fresh(scenario)
        scenario.produce(broker_b, 1)
        run(scenario, broker_b, root, FakeClock())
        got = scenario.observe(broker_b, root)
        for key in scenario.carried:
            got.pop(key, None)
            want.pop(key, None)
        _assert_same(scenario, "new cluster", got, want)


def _identities(broker: MemoryBroker, topic: str) -> list[tuple[str, str]]:
    """(request_id, item_id) of every example in ``topic``, in partition and offset order."""
    out = []
    for m in broker.messages(topic):
        ex = decode_example(m.value())
        out.append((ex.request_id, ex.item_id))
    return out


def check_learned_once(joiner: Scenario, trainer: Build, topic: str) -> dict[str, int]:
    """A kill -9 of the joiner at the first, a middle and the last occurrence of every
    step (its local state lost or not), then a restart; then ``trainer`` (an
    ``OnlineTrainer`` reading ``topic``) learns the topic, where a few examples were
    written a second time (as a frozen worker waking up late would): the topic held each
    (request, item) of the clean run once, and the trainer learned each once and dropped
    the copies. Returns the crashes survived per step."""
    survived: dict[str, int] = {}
    with _tmpdir() as d:
        broker, _ = clean_run(joiner, d / "clean")
        want = _identities(broker, topic)
        if not want or len(set(want)) != len(want):
            raise AssertionError(f"{joiner.name}: the clean run emitted {len(want)} examples")
        counting = Faults()
        broker = _fresh(joiner, counting)
        joiner.produce(broker, 0)
        joiner.produce(broker, 1)
        run(joiner, broker, d / "count", FakeClock())
        for step in STEPS:
            n = counting.counts[step]
            for k in sorted({1, (n + 1) // 2, n}):
                for lose_state in (False, True):
                    broker = _fresh(joiner, Faults(at=(step, k)))
                    joiner.produce(broker, 0)
                    joiner.produce(broker, 1)
                    root = d / f"{step}-{k}-{lose_state}"
                    clock = FakeClock()
                    if run(joiner, broker, root, clock):
                        raise AssertionError(f"{joiner.name}: no crash at {step} #{k}")
                    what = f"{joiner.name} killed at {step} #{k}" + (
                        ", local state lost" if lose_state else ""
                    )
                    if lose_state:
                        shutil.rmtree(root / "state", ignore_errors=True)
                    broker.faults = Faults()
                    run(joiner, broker, root, clock)
                    got = _identities(broker, topic)
                    if sorted(got) != sorted(want):
                        twice = sorted({i for i in got if got.count(i) > 1})[:5]
                        raise AssertionError(
                            f"{what}: the topic holds {len(got)} examples ({len(set(got))} "
                            f"distinct) for {len(want)}; twice: {twice}"
                        )
                    copies = _copy_some(broker, topic)
                    _assert_learned_once(what, trainer, broker, root / "trainer", want, copies)
                    survived[step] = survived.get(step, 0) + 1
    return survived


def _copy_some(broker: MemoryBroker, topic: str) -> int:
    """Write every seventh example of ``topic`` again, at its partition's end."""
    msgs = broker.messages(topic)[::7]
    for m in msgs:
        broker.append(topic, m.value(), m.key(), m.partition())
    return len(msgs)


def _assert_learned_once(
    what: str,
    build: Build,
    broker: MemoryBroker,
    root: Path,
    want: list[tuple[str, str]],
    copies: int,
) -> None:
    proc = build(root, broker, FakeClock())
    if not isinstance(proc, OnlineTrainer):
        raise TypeError(f"check_learned_once needs an OnlineTrainer, got {type(proc).__name__}")
    rt = MicroBatchRuntime(proc, broker, RuntimeConfig("learned-once", commit_interval_s=0))
    rt.run(idle_polls=3, max_seconds=60)
    ids = example_ids(want)
    expected = (len(want), int(ids.sum(dtype=ids.dtype)), copies)
    got = (proc.examples_seen, proc.ids_fingerprint, proc.duplicates)
    if got != expected:
        raise AssertionError(
            f"{what}: the trainer learned (examples, ids fingerprint, copies dropped) = "
            f"{got}, expected {expected}: not each (request, item) once"
        )


Check = Callable[[Scenario], Any]


def yield_checks() -> Iterator[Check]:
    """Every check, in a stable order."""
    yield check_discard_then_retry
    yield check_restart_from_stored_offsets
    yield check_restore_from_changelog
    yield check_crash_at_every_step
    yield check_zombie
    yield check_new_cluster


__all__ = [
    "STEPS",
    "FakeClock",
    "Scenario",
    "StillTime",
    "check_crash_at_every_step",
    "check_discard_then_retry",
    "check_learned_once",
    "check_new_cluster",
    "check_restart_from_stored_offsets",
    "check_restore_from_changelog",
    "check_zombie",
    "clean_run",
    "run",
    "yield_checks",
]
