"""Where ``up``'s embedded broker listens, for the commands a user runs beside it.

``up`` writes ``<data dir>/run/broker`` (``host:port pid``) once its embedded broker
accepts connections and removes it when it stops; a command run without
``--bootstrap-servers`` reads it (:func:`running_broker`) while that ``up`` is alive, so
``streamlearn eval --topic …`` or ``features get`` in a second terminal find the broker
the way ``up``'s own processes do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

#: The file, under the data directory.
BROKER_FILE: Final = Path("run") / "broker"


def write(data_dir: Path, bootstrap: str) -> Path:
    """Record that this process runs a broker at ``bootstrap``; returns the file."""
    path = data_dir / BROKER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{bootstrap} {os.getpid()}\n")
    tmp.replace(path)
    return path


def remove(data_dir: Path) -> None:
    """Forget the broker (``up`` stops it)."""
    (data_dir / BROKER_FILE).unlink(missing_ok=True)


def running_broker(data_dir: Path) -> str | None:
    """The address ``up`` recorded in ``data_dir``, or ``None`` when there is none or the
    ``up`` that wrote it is gone (killed before it could remove the file)."""
    try:
        bootstrap, pid = (data_dir / BROKER_FILE).read_text().split()
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return None
    return bootstrap
