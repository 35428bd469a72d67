"""``streamlearn init DIR``: a new project that runs as it is.

It copies the starter project (``streamlearn.examples.starter``: a commented
*project.py*) into ``DIR`` and writes a sample log for it, ``events.csv``: users shown
items on the project's first surface, engaging with some, from a hidden engagement model a
learner can find (each user's taste for each of a few item groups), so that
``streamlearn up --project DIR --log DIR/events.csv`` trains and serves a model that
beats random ranking. The log uses the declared names (the first impression and
engagement types, the first surface), so it follows the project's own declarations.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Final

import numpy as np

from streamlearn.project.declaration import Project
from streamlearn.project.errors import ProjectError
from streamlearn.project.loader import DEFINITIONS, builtin_root, load_project

#: The example project ``init`` copies.
STARTER: Final = "starter"
#: The sample log's name in the new project.
SAMPLE_LOG: Final = "events.csv"


def init(directory: Path, requests: int = 4000, seed: int = 0) -> list[Path]:
    """Write a new project into ``directory`` (created; an existing project there is
    refused) and its sample log of ``requests`` requests; return the files written."""
    directory = Path(directory)
    if (directory / DEFINITIONS).exists():
        raise ProjectError(f"{directory} already holds a project ({DEFINITIONS}): not touched")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DEFINITIONS
    shutil.copyfile(builtin_root(STARTER) / DEFINITIONS, target)
    log = directory / SAMPLE_LOG
    write_sample_log(load_project(directory), log, requests=requests, seed=seed)
    return [target, log]


def rewrite_sample_log(directory: Path, requests: int = 4000, seed: int = 0) -> Path:
    """Write the sample log again for the project already in ``directory``, after its
    declarations were edited (its names are the log's); return the log's path."""
    directory = Path(directory)
    if not (directory / DEFINITIONS).exists():
        raise ProjectError(f"{directory} holds no project ({DEFINITIONS}): run `streamlearn init`")
    log = directory / SAMPLE_LOG
    write_sample_log(load_project(directory), log, requests=requests, seed=seed)
    return log


def write_sample_log(project: Project, path: Path, requests: int = 4000, seed: int = 0) -> int:
    """A synthetic log of ``project``'s events (see the module docstring); returns the
    number of events written."""
    schema = project.schema
    shown_type = schema.events.impressions[0]
    engaged_type = schema.events.engagements[0] if schema.events.engagements else None
    surface = schema.surfaces[0]
    rng = np.random.default_rng(seed)
    n_users, n_items, groups = 300, 120, 4
    taste = rng.normal(0.0, 1.2, size=(n_users, groups))
    group = rng.integers(0, groups, size=n_items)
    quality = rng.normal(0.0, 0.6, size=n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    t0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    rows: list[tuple[float, str, str, str, str, str, int]] = []
    ts = t0
    for r in range(requests):
        ts += float(rng.exponential(2.0))
        user = int(rng.integers(n_users))
        items = rng.choice(n_items, size=5, replace=False, p=popularity)
        for pos, item in enumerate(items):
            row = (ts, shown_type, f"u{user}", f"i{item}", surface, f"r{r}", pos)
            rows.append(row)
            logit = -2.2 + taste[user, group[item]] + quality[item] - 0.3 * pos
            if engaged_type and rng.random() < 1.0 / (1.0 + math.exp(-logit)):
                rows.append((ts + float(rng.uniform(0.5, 8.0)), engaged_type, *row[2:]))
    rows.sort(key=lambda row: row[0])  # a log in time order, as one is recorded
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ts", "type", "user_id", "item_id", "surface", "request_id", "position"])
        out.writerows((f"{row[0]:.3f}", *row[1:]) for row in rows)
    return len(rows)
