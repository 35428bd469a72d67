"""``streamlearn init DIR --log-only``: the sample log again, for edited declarations."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from streamlearn.cli.root import app
from streamlearn.project.scaffold import init

SHOP = """
from streamlearn.project import Count, Events, Feature, Head, Model, Project

project = Project(
    name="shop",
    events=Events(impressions=["view"], engagements=["add_to_cart"]),
    surfaces=["search"],
    features=[Feature("user_carts", "user", Count(["add_to_cart"]))],
    heads=[Head("cart", positives=["add_to_cart"])],
    models=[Model("search", head="cart", surfaces=["search"])],
)
"""


def test_the_log_follows_the_edited_declarations(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    init(shop, requests=50)
    (shop / "project.py").write_text(SHOP)
    run = CliRunner().invoke(app, ["init", str(shop), "--log-only", "--requests", "50"])
    assert run.exit_code == 0, run.output
    assert run.output.strip() == str(shop / "events.csv")
    with open(shop / "events.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["type"] for r in rows} == {"view", "add_to_cart"}
    assert {r["surface"] for r in rows} == {"search"}
    assert (shop / "project.py").read_text() == SHOP  # the declarations are not touched


def test_log_only_needs_a_project(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["init", str(tmp_path / "nothing"), "--log-only"])
    assert run.exit_code == 2
    assert "holds no project (project.py): run `streamlearn init`" in run.output
    assert not (tmp_path / "nothing").exists()
