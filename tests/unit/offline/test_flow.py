"""The flow engine without a broker: caching, invalidation, lineage, failures, re-runs."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamlearn.offline.errors import FlowError
from streamlearn.offline.flow import Flow, FlowStepError, StepContext, run_flow
from streamlearn.offline.flow.runs import read_runs

calls: Counter[str] = Counter()


def make_flow(fail_b: dict[str, bool] | None = None) -> Flow:
    """a → b → c, counting executions; ``b`` fails while ``fail_b["on"]`` is set."""
    state = fail_b if fail_b is not None else {"on": False}
    flow = Flow("demo", params={"n": 3, "scale": 2})

    @flow.step()
    def a(ctx: StepContext, n: int) -> list[int]:
        calls["a"] += 1
        (ctx.out / "numbers.txt").write_text(" ".join(map(str, range(n))))
        return list(range(n))

    @flow.step(inputs=["a"])
    def b(a: list[int], scale: int) -> int:
        calls["b"] += 1
        if state["on"]:
            raise ValueError(f"expected a healthy b, got scale={scale}")
        return sum(a) * scale

    @flow.step(inputs=["a", "b"])
    def c(ctx: StepContext, a: list[int], b: int) -> dict[str, Any]:
        calls["c"] += 1
        return {"total": b, "count": len(a), "upstream": sorted(ctx.lineage()["steps"])}

    return flow


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def test_rerun_with_same_inputs_reuses_every_cached_output(tmp_path: Path) -> None:
    flow = make_flow()
    first = run_flow(flow, root=tmp_path)
    assert first.outputs["c"] == {"total": 6, "count": 3, "upstream": ["a", "b", "c"]}
    assert calls == {"a": 1, "b": 1, "c": 1}
    second = run_flow(flow, root=tmp_path)
    assert calls == {"a": 1, "b": 1, "c": 1}  # nothing executed again
    assert second.outputs == first.outputs
    assert {s["status"] for s in second.record["steps"].values()} == {"cached"}
    key_a = first.record["steps"]["a"]["key"]
    assert (tmp_path / "demo" / "a" / key_a / "numbers.txt").read_text() == "0 1 2"
    run_flow(flow, root=tmp_path, use_cache=False)
    assert calls == {"a": 2, "b": 2, "c": 2}


def test_param_change_invalidates_only_the_steps_that_take_it(tmp_path: Path) -> None:
    flow = make_flow()
    run_flow(flow, root=tmp_path)
    r = run_flow(flow, {"scale": 5}, root=tmp_path)
    assert calls == {"a": 1, "b": 2, "c": 2}
    assert [r.record["steps"][s]["status"] for s in "abc"] == ["cached", "executed", "executed"]
    assert r.outputs["c"]["total"] == 15
    run_flow(flow, {"n": 4}, root=tmp_path)  # a changes, so everything downstream does
    assert calls == {"a": 2, "b": 3, "c": 3}


def test_code_change_invalidates_the_step_and_downstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def source(n: int) -> int:
        calls["source"] += 1
        return n

    def plus_one(source: int) -> int:
        calls["plus"] += 1
        return source + 1

    def plus_two(source: int) -> int:  # same step name, another body
        calls["plus"] += 1
        return source + 2

    v1, v2 = Flow("code", params={"n": 1}), Flow("code", params={"n": 1})
    v1.add_step(source)
    v1.add_step(plus_one, ["source"], name="plus")
    v2.add_step(source)
    v2.add_step(plus_two, ["source"], name="plus")
    a = run_flow(v1, root=tmp_path)
    b = run_flow(v2, root=tmp_path)
    assert (a.outputs["plus"], b.outputs["plus"]) == (2, 3)
    assert calls == {"source": 1, "plus": 2}
    assert a.record["steps"]["plus"]["key"] != b.record["steps"]["plus"]["key"]
    # a new package version invalidates every step
    monkeypatch.setattr(
        "streamlearn.offline.flow.cache.code_version",
        lambda: {"package": "9.9.9", "git_commit": None},
    )
    c = run_flow(v2, root=tmp_path)
    assert calls == {"source": 2, "plus": 3}
    assert c.record["steps"]["plus"]["code"]["package"] == "9.9.9"


def test_fingerprint_of_external_state_joins_the_key(tmp_path: Path) -> None:
    outside = {"version": 1}
    flow = Flow("fp")

    @flow.step(fingerprint=lambda: outside["version"])
    def read() -> int:
        calls["read"] += 1
        return outside["version"]

    run_flow(flow, root=tmp_path)
    run_flow(flow, root=tmp_path)
    outside["version"] = 2
    r = run_flow(flow, root=tmp_path)
    assert calls["read"] == 2 and r.outputs["read"] == 2
    assert r.record["steps"]["read"]["fingerprint"] == 2


def test_lineage_records_every_step(tmp_path: Path) -> None:
    result = run_flow(make_flow(), {"n": 2}, root=tmp_path)
    record = json.loads(result.path.read_text())
    assert result.path.parent == tmp_path / "demo" / "_runs"
    assert record["status"] == "succeeded" and record["params"] == {"n": 2, "scale": 2}
    assert record["code"]["package"]
    steps = record["steps"]
    assert list(steps) == ["a", "b", "c"]
    for name, entry in steps.items():
        assert entry["status"] == "executed"
        assert len(entry["key"]) == 32 and entry["seconds"] >= 0 and entry["started_at"]
        assert entry["code"]["source"] and Path(entry["path"]).name == entry["key"]
        assert set(entry["inputs"]) == set(make_flow().steps[name].inputs)
    assert steps["b"]["params"] == {"scale": 2} and steps["a"]["params"] == {"n": 2}
    assert steps["c"]["inputs"] == {"a": steps["a"]["key"], "b": steps["b"]["key"]}
    assert steps["a"]["output"] == [0, 1] and steps["b"]["output"] == 2
    assert [r["run_id"] for r in read_runs(tmp_path, "demo")] == [record["run_id"]]


def test_failed_step_keeps_upstream_and_reruns_alone(tmp_path: Path) -> None:
    fail = {"on": True}
    flow = make_flow(fail)
    with pytest.raises(FlowStepError) as info:
        run_flow(flow, root=tmp_path)
    err = info.value
    assert err.step == "b"
    assert "step 'b' of flow 'demo' failed: ValueError: expected a healthy b" in str(err)
    assert "--step b" in str(err) and "(a) stay cached" in str(err)
    record = json.loads(err.path.read_text())
    assert record["status"] == "failed" and record["failed_step"] == "b"
    assert [record["steps"][s]["status"] for s in "abc"] == ["executed", "failed", "skipped"]
    assert "ValueError" in record["steps"]["b"]["error"]
    assert not Path(record["steps"]["b"]["path"]).exists()  # no partial output left
    assert Path(record["steps"]["a"]["path"], "step.json").exists()

    fail["on"] = False
    alone = run_flow(flow, root=tmp_path, step="b")
    assert calls == {"a": 1, "b": 2}  # a came from the cache, c did not run
    assert {k: v["status"] for k, v in alone.record["steps"].items()} == {
        "a": "cached",
        "b": "executed",
    }
    full = run_flow(flow, root=tmp_path)
    assert calls == {"a": 1, "b": 2, "c": 1}
    assert [full.record["steps"][s]["status"] for s in "abc"] == ["cached", "cached", "executed"]


def test_step_alone_needs_cached_upstream_and_until_stops_early(tmp_path: Path) -> None:
    flow = make_flow()
    with pytest.raises(FlowError, match=r"needs the output of 'a'.*--until a"):
        run_flow(flow, root=tmp_path, step="c")
    assert calls == {}
    r = run_flow(flow, root=tmp_path, until="b")
    assert list(r.record["steps"]) == ["a", "b"] and calls == {"a": 1, "b": 1}
    with pytest.raises(FlowError, match=r"has steps \['a', 'b', 'c'\], got 'z'"):
        run_flow(flow, root=tmp_path, step="z")


def test_parallel_runs_execute_a_shared_step_once(tmp_path: Path) -> None:
    flow = Flow("shared", params={"x": 1})

    @flow.step()
    def slow(x: int) -> int:
        calls["slow"] += 1
        time.sleep(0.3)
        return x

    threads = [threading.Thread(target=run_flow, args=(flow,), kwargs={"root": tmp_path})]
    threads.append(threading.Thread(target=run_flow, args=(flow,), kwargs={"root": tmp_path}))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls["slow"] == 1


def test_declaration_and_param_errors_say_what_was_expected() -> None:
    flow = Flow("decl", params={"n": 1})

    @flow.step()
    def a(n: int) -> int:
        return n

    with pytest.raises(FlowError, match=r"inputs must be steps declared before it \['a'\]"):
        flow.add_step(lambda b: b, ["b"], name="x")
    with pytest.raises(FlowError, match=r"a parameter for each input \['a'\], missing \['a'\]"):
        flow.add_step(lambda n: n, ["a"], name="y")
    with pytest.raises(FlowError, match="already declared"):
        flow.add_step(a)
    with pytest.raises(FlowError, match=r"takes params \['n'\], got unknown \['m'\]"):
        flow.resolve_params({"m": 2})
    with pytest.raises(FlowError, match="identifier"):
        Flow("bad name")

    free = Flow("free")

    @free.step()
    def b(**kw: Any) -> dict[str, Any]:
        return kw

    assert free.step_params(free.get("b"), free.resolve_params({"alpha": 0.1})) == {"alpha": 0.1}


def test_unpicklable_or_non_json_params_fail_clearly(tmp_path: Path) -> None:
    flow = Flow("odd", params={"p": 1})

    @flow.step()
    def gen(p: Any) -> Any:
        return (i for i in range(3))  # a generator cannot be cached

    with pytest.raises(FlowStepError, match="expected step 'gen' to return data, got generator"):
        run_flow(flow, root=tmp_path)
    assert [
        p.name for p in (tmp_path / "odd" / "gen").iterdir() if not p.name.startswith(".")
    ] == []
    with pytest.raises(FlowStepError, match="expected JSON-safe params of step 'gen'"):
        run_flow(flow, {"p": object()}, root=tmp_path)


class _Exploit:
    """Unpickling this creates ``path``: what a pickle planted in a shared cache could
    do with any code it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_pickle_planted_in_the_cache_is_refused_never_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib
    import pickle

    flow = make_flow()
    first = run_flow(flow, root=tmp_path / "cache")
    step_dir = Path(first.record["steps"]["b"]["path"])
    output = step_dir / "output.msgpack"
    assert output.exists() and not (step_dir / "output.pkl").exists()
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))

    # as an older version's pickled output, beside the record
    (step_dir / "output.pkl").write_bytes(payload)
    again = run_flow(flow, root=tmp_path / "cache")
    assert not marker.exists()
    assert again.record["steps"]["b"]["status"] == "executed" and calls["b"] == 2
    assert "is a pickle, which can run code" in caplog.text
    assert again.outputs["c"] == first.outputs["c"]  # recomputed: the pickle is gone
    assert not (step_dir / "output.pkl").exists()

    # in place of the output, with its checksum in the record (a writer who knows the
    # format): it is not msgpack data of the step's type, so it is refused too
    record = json.loads((step_dir / "step.json").read_text())
    output.write_bytes(payload)
    record["output_sha256"] = hashlib.sha256(payload).hexdigest()
    (step_dir / "step.json").write_text(json.dumps(record))
    caplog.clear()
    third = run_flow(flow, root=tmp_path / "cache")
    assert not marker.exists()
    assert third.record["steps"]["b"]["status"] == "executed" and calls["b"] == 3
    assert "refusing the cache of step=b" in caplog.text

    # a tampered output (checksum mismatch) is refused as well
    output.write_bytes(output.read_bytes()[:-1] + b"\x00")
    fourth = run_flow(flow, root=tmp_path / "cache")
    assert fourth.record["steps"]["b"]["status"] == "executed" and calls["b"] == 4
