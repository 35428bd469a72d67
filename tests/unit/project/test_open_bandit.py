"""The Open Bandit example: its converter on a tiny wheel built here (no download), and
its project loads and takes the log's columns."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from streamlearn.examples.open_bandit import convert
from streamlearn.project.loader import load_project

HEADER = (
    ",timestamp,item_id,position,click,propensity_score,"
    "user_feature_0,user_feature_1,user_feature_2,user_feature_3,user-item_affinity_0\n"
)
ITEMS = ",item_id,item_feature_0,item_feature_1\n0,0,-0.6,aaaaaaaaaaaa\n1,1,0.2,bbbbbbbbbbbb\n"
USER = "cef3390ed299c098,03a5648a76832f83,7bc94a2da491829b,9bde591ffaab8d54"


def _file(rows: list[tuple[str, int, int, int]]) -> str:
    """A campaign's CSV: (time, item, position from 1, click) per row."""
    lines = [
        f"{n},2019-11-24 {t}+00:00,{item},{pos},{click},0.33,{USER},0.0\n"
        for n, (t, item, pos, click) in enumerate(rows)
    ]
    return HEADER + "".join(lines)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A wheel holding the sample's layout, two files of each policy out of order."""
    path = tmp_path / "obp-0.4.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for policy, rows in {
            "random": [("00:00:05.000001", 1, 3, 1), ("00:00:09.5", 0, 1, 0)],
            "bts": [("00:00:02.25", 0, 2, 0), ("00:00:07", 1, 1, 1)],
        }.items():
            for campaign in convert.CAMPAIGNS:
                folder = f"{convert.ROOT}/{policy}/{campaign}"
                zf.writestr(f"{folder}/{campaign}.csv", _file(rows if campaign == "men" else []))
                zf.writestr(f"{folder}/item_context.csv", ITEMS)
    return path


def test_the_log_has_the_columns_in_time_order_with_each_click_after_its_impression(
    wheel: Path, tmp_path: Path
) -> None:
    rows = convert.events(wheel)
    out = tmp_path / "obd.csv"
    convert.write_log(rows, out)
    with open(out, newline="") as fh:
        log = list(csv.DictReader(fh))
    assert list(log[0]) == list(convert.COLUMNS)
    assert [(r["ts"][11:23], r["type"], r["request_id"]) for r in log] == [
        ("00:00:02.250", "impression", "bts-men-0"),
        ("00:00:05.000", "impression", "random-men-0"),
        ("00:00:05.000", "click", "random-men-0"),
        ("00:00:07.000", "impression", "bts-men-1"),
        ("00:00:07.000", "click", "bts-men-1"),
        ("00:00:09.500", "impression", "random-men-1"),
    ]
    first, click = log[1], log[2]
    assert first["ts"] == "2019-11-24T00:00:05.000001+00:00"
    # the click is its impression's event but its type: same user, item, request
    assert {k: v for k, v in click.items() if k != "type"} == {
        k: v for k, v in first.items() if k != "type"
    }
    assert first["item_id"] == "men-1" and first["surface"] == "men"
    assert first["position"] == "2"  # slots from 0
    assert first["policy"] == "random" and first["item_group"] == "gbbbbbbbb"
    assert [first[f] for f in convert.USER_FEATURES] == [u[:8] for u in USER.split(",")]
    # a user is the segment sharing the four features: one id for the same features
    assert first["user_id"].startswith("u") and {r["user_id"] for r in log} == {first["user_id"]}


def test_limit_and_campaign_select_rows(wheel: Path) -> None:
    assert len(convert.events(wheel, limit=1)) == 3  # one impression per file, one click
    assert convert.events(wheel, campaigns=["women"]) == []


def test_the_project_takes_the_logs_columns() -> None:
    project = load_project(Path(convert.__file__).parent)
    assert set(project.schema.surfaces) == {"all", "men", "women"}
    assert set(project.model_catalog.names) == {"carousel"}
    declared = {f.name for f in project.fields}
    assert set(convert.USER_FEATURES) <= declared
