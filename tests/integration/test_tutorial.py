"""The tutorial's commands, run as a reader runs them, so the docs cannot drift.

A page marks what to run with an HTML comment before a fenced block (invisible on the
site):

- ``<!-- test: run -->``: run the block with bash; it must exit 0;
- ``<!-- test: retry -->``: run it until it exits 0 (a server that is still starting);
- ``<!-- test: background -->``: start it and leave it running, as in a first terminal;
- ``<!-- test: ctrl-c -->`` (anywhere in the text): interrupt the background command
  (SIGINT, as Ctrl-C does); it must exit 0;
- ``<!-- test: write PATH -->``: save the block as the file ``PATH``;
- ``<!-- test: wait TEXT -->`` (anywhere in the text): wait until the background
  command's output says ``TEXT``, as the page tells its reader to.

Each page runs in a temporary directory of its own with this virtual environment's
``streamlearn`` first on ``PATH``, on the embedded broker that ``up`` starts. Port 8080 in
the commands is replaced by a free port, so that a run never meets another server.
Every wait is bounded; a page's whole run takes well under a minute or two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamlearn.streams.kafka.broker import free_port

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARK = re.compile(r"<!-- test: (run|retry|background|ctrl-c|write \S+|wait [^>]*?) -->")
FENCE = re.compile(r"\s*```[^\n]*\n(.*?)\n```", re.S)
#: Bounds: one command, a retried command, and the background command's stop.
RUN_S, RETRY_S, STOP_S = 120.0, 90.0, 90.0


@dataclass(frozen=True)
class Step:
    """One marked step of a page: what to do and the block it applies to."""

    action: str
    code: str
    line: int


def steps(page: Path) -> list[Step]:
    """The marked steps of a page, in order; a marker that needs a block and has none
    right after it is an error."""
    text = page.read_text()
    out = []
    for m in MARK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1) == "ctrl-c" or m.group(1).startswith("wait "):
            out.append(Step(m.group(1), "", line))
            continue
        block = FENCE.match(text, m.end())
        assert block, f"{page.name}:{line}: {m.group(0)} is not followed by a fenced block"
        out.append(Step(m.group(1), block.group(1), line))
    return out


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if MARK.search(p.read_text()))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    return env


def _bash(code: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_marked_pages_are_the_tutorials() -> None:
    """The markers are where they should be (a page that loses them is no longer run)."""
    names = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert {"tutorial/run-the-loop.md", "tutorial/your-project.md"} <= names
    for page in pages():
        actions = [s.action for s in steps(page)]
        assert actions.count("background") == actions.count("ctrl-c"), page


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_a_tutorial_runs_as_written(page: Path, tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        assert shutil.which(tool), f"the tutorials use {tool}: install it"
    port = str(free_port())
    where = page.relative_to(DOCS)
    background: subprocess.Popen[str] | None = None
    log = tmp_path / "background.log"
    try:
        for step in steps(page):
            code = re.sub(r"\b8080\b", port, step.code)
            at = f"{where}:{step.line}"
            if step.action.startswith("write "):
                path = tmp_path / step.action.split(" ", 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(step.code + "\n")
            elif step.action == "run":
                out = _bash(code, tmp_path, RUN_S)
                assert out.returncode == 0, (
                    f"{at}: {code}\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
                )
            elif step.action == "retry":
                deadline = time.monotonic() + RETRY_S
                while True:
                    out = _bash(code, tmp_path, RUN_S)
                    if out.returncode == 0:
                        break
                    assert background is None or background.poll() is None, (
                        f"{at}: the background command exited:\n{log.read_text()[-3000:]}"
                    )
                    assert time.monotonic() < deadline, (
                        f"{at}: still failing after {RETRY_S:.0f} s: {code}\n"
                        f"{out.stdout[-2000:]}{out.stderr[-2000:]}"
                    )
                    time.sleep(1.0)
            elif step.action == "background":
                assert background is None, f"{at}: a background command is running already"
                background = subprocess.Popen(
                    ["bash", "-c", f"exec {code}"],
                    cwd=tmp_path,
                    env=_env(),
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            elif step.action.startswith("wait "):
                text = step.action.split(" ", 1)[1]
                deadline = time.monotonic() + RETRY_S
                while text not in log.read_text(errors="replace"):
                    assert background is not None and background.poll() is None, (
                        f"{at}: waiting for {text!r}, nothing running:\n{log.read_text()[-3000:]}"
                    )
                    assert time.monotonic() < deadline, (
                        f"{at}: {text!r} not said after {RETRY_S:.0f} s:\n{log.read_text()[-3000:]}"
                    )
                    time.sleep(0.5)
            else:  # ctrl-c
                assert background is not None, f"{at}: Ctrl-C with nothing running"
                assert background.poll() is None, f"{at}: exited early:\n{log.read_text()[-3000:]}"
                background.send_signal(signal.SIGINT)
                code_ = background.wait(timeout=STOP_S)
                assert code_ == 0, f"{at}: exited {code_} on Ctrl-C:\n{log.read_text()[-3000:]}"
                background = None
    finally:
        if background is not None and background.poll() is None:
            os.killpg(background.pid, signal.SIGKILL)
            background.wait()
    _check_results(where.as_posix(), tmp_path)


def _check_results(page: str, cwd: Path) -> None:
    """What each tutorial says its run gives: models trained and serving answers."""
    if page == "tutorial/run-the-loop.md":
        feed = json.loads((cwd / "s.json").read_text())["models"]["feed"]
        assert feed["versions"] >= 2 and feed["examples_trained"] > 0, feed
        assert feed["predictions_served"] > 0, feed
    elif page == "tutorial/your-project.md":
        summary = json.loads((cwd / "s.json").read_text())
        assert summary["project"] == "shop" and summary["dlq_events"] == 0, summary
        search = summary["models"]["search"]
        assert search["versions"] >= 2 and search["examples_trained"] > 10_000, search
        assert search["progressive_auc"] > 0.6, search  # the sample log's signal is learned
