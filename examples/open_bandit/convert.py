"""The Open Bandit Dataset's sample as a log of events (``streamlearn produce --log``).

The Open Bandit Dataset (ZOZO, Inc.; CC BY 4.0; Saito et al., "Open Bandit Dataset and
Pipeline", NeurIPS 2021 Datasets and Benchmarks) records a fashion site's
recommendation carousel: which item a policy showed in which of three slots, to a user
described by four hashed features, and whether the user clicked it. The ``obp`` wheel
(version 0.4.1, the *Open Bandit Pipeline*) carries a sample of 10,000 impressions for
each of two policies (``random``, ``bts``: Bernoulli Thompson sampling) and three
campaigns (``all``, ``men``, ``women``), over the same week of November 2019: 60,000
impressions and 287 clicks. This module reads those CSV files from the wheel (nothing
is installed) and writes one CSV log, in time order:

===============  ==========================================================================
column           from the sample
===============  ==========================================================================
``ts``           ``timestamp`` (ISO 8601, UTC)
``type``         ``impression`` for every row; a ``click`` row after each clicked one
``user_id``      ``u`` + a digest of the four user features: the sample has no user id,
                 so a "user" is a segment of users who share those features
``item_id``      ``<campaign>-<item_id>`` (each campaign numbers its items from 0)
``surface``      the campaign: ``all``, ``men`` or ``women``
``request_id``   ``<policy>-<campaign>-<row>``: one impression per request; its click
                 has the same id, so the joiner labels the impression with it
``position``     the slot, from 0 (``position`` - 1)
``user_feature_0`` … ``_3``  the hashed user features (declared string fields)
``policy``       the policy that chose the item (goes into the event's context)
``item_group``   ``g`` + ``item_feature_1`` of the campaign's ``item_context.csv`` (context)
===============  ==========================================================================

A click happens at its impression's time (the sample has one timestamp per row).
``propensity_score`` and the user–item affinities are left out (the affinity of the
shown item is 0 in 99.9% of rows).

Run it (``pip`` downloads the wheel, about 9 MB, unless ``--wheel`` names one)::

    python -m streamlearn.examples.open_bandit.convert --out obd.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

#: The wheel that carries the sample, and where in it the files are.
WHEEL: Final = "obp==0.4.1"
ROOT: Final = "obp/dataset/obd"
POLICIES: Final = ("random", "bts")
CAMPAIGNS: Final = ("all", "men", "women")
USER_FEATURES: Final = tuple(f"user_feature_{i}" for i in range(4))
COLUMNS: Final = (
    "ts",
    "type",
    "user_id",
    "item_id",
    "surface",
    "request_id",
    "position",
    *USER_FEATURES,
    "policy",
    "item_group",
)


def download_wheel(dest: Path) -> Path:
    """Download the ``obp`` wheel into ``dest`` with pip (no dependencies, nothing
    installed); return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob("obp-0.4.1-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL,
             "--dest", str(dest)],
            check=True,
        )  # fmt: skip
        found = sorted(dest.glob("obp-0.4.1-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {dest}")
    return found[0]


def _rows(wheel: zipfile.ZipFile, name: str) -> Iterator[dict[str, str]]:
    with wheel.open(name) as fh:
        yield from csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))


def user_id(row: dict[str, str]) -> str:
    """The segment of users who share the row's four user features."""
    key = "|".join(row[f] for f in USER_FEATURES)
    return "u" + hashlib.sha1(key.encode()).hexdigest()[:10]


def events(
    wheel_path: Path,
    policies: Sequence[str] = POLICIES,
    campaigns: Sequence[str] = CAMPAIGNS,
    limit: int | None = None,
) -> list[list[str]]:
    """The log's rows (see the module docstring), in time order; ``limit``: the first
    impressions of each file."""
    out: list[tuple[float, int, list[str]]] = []
    with zipfile.ZipFile(wheel_path) as wheel:
        for policy in policies:
            for campaign in campaigns:
                folder = f"{ROOT}/{policy}/{campaign}"
                groups = {
                    r["item_id"]: "g" + r["item_feature_1"][:8]
                    for r in _rows(wheel, f"{folder}/item_context.csv")
                }
                for n, r in enumerate(_rows(wheel, f"{folder}/{campaign}.csv")):
                    if limit is not None and n >= limit:
                        break
                    when = datetime.fromisoformat(r["timestamp"])
                    ts = when.isoformat(timespec="microseconds")
                    item = r["item_id"]
                    row = [
                        ts,
                        "impression",
                        user_id(r),
                        f"{campaign}-{item}",
                        campaign,
                        f"{policy}-{campaign}-{r['']}",
                        str(int(r["position"]) - 1),
                        *(r[f][:8] for f in USER_FEATURES),
                        policy,
                        groups[item],
                    ]
                    out.append((when.timestamp(), 0, row))
                    if r["click"] == "1":
                        out.append((when.timestamp(), 1, [row[0], "click", *row[2:]]))
    out.sort(key=lambda e: (e[0], e[1]))
    return [row for _, _, row in out]


def write_log(rows: list[list[str]], path: Path) -> None:
    """Write ``rows`` as a CSV log with a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        out.writerows(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streamlearn.examples.open_bandit.convert --out obd.csv``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV log to write.")
    parser.add_argument("--wheel", type=Path, help="The obp 0.4.1 wheel (default: download it).")
    parser.add_argument(
        "--campaign", action="append", choices=CAMPAIGNS, help="Only these (repeatable)."
    )
    parser.add_argument("--limit", type=int, help="Only the first N rows of each file.")
    args = parser.parse_args(argv)
    if args.wheel is None:
        args.wheel = download_wheel(Path(tempfile.gettempdir()) / "streamlearn-obp")
    rows = events(args.wheel, campaigns=args.campaign or CAMPAIGNS, limit=args.limit)
    write_log(rows, args.out)
    clicks = sum(1 for r in rows if r[1] == "click")
    print(f"{args.out}: {len(rows) - clicks} impressions, {clicks} clicks")


if __name__ == "__main__":
    main()
