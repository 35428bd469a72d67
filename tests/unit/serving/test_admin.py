"""Admin over HTTP: promote, rollback and reject with a bearer token, on the real server."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from streamlearn.models.registry import FileRegistry
from streamlearn.models.stages import history
from streamlearn.serving.http import build_api
from streamlearn.serving.server import HttpLimits, HttpServer
from streamlearn.serving.service import PredictionService
from streamlearn.serving.updates import ModelUpdater
from streamlearn.streams.contracts import ModelUpdate
from tests.example import CATALOG
from tests.unit.serving.helpers import DictFeatures, publish_ftrl

TOKEN = "s3cret-token"


class Admin:
    def __init__(self, tmp: Path, token: str | None) -> None:
        self.registry = FileRegistry(tmp)
        for seed in range(3):
            publish_ftrl(self.registry, seed=seed)
        self.service = PredictionService(self.registry, DictFeatures(), ["feed"], CATALOG)
        updater = ModelUpdater(self.service, kafka=None)
        updater.check_all()
        self.announced: list[ModelUpdate] = []
        api = build_api(
            self.service,
            None,
            admin_token=None if token is None else SecretStr(token),
            refresh=updater.check,
            announce=self.announced.append,
        )
        self.server = HttpServer(api, "127.0.0.1", 0, HttpLimits()).start()

    def post(self, path: str, token: str | None = TOKEN, scheme: str = "Bearer") -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
        conn.request("POST", path, headers=headers)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        return resp.status, body


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    a = Admin(tmp_path, TOKEN)
    yield a
    a.server.stop()


def test_promote_rollback_reject_change_what_is_served(admin: Admin) -> None:
    assert admin.service.version("feed") == 3  # newest, nothing promoted yet
    code, body = admin.post("/v1/models/feed/versions/1:promote")
    assert code == 200, body
    assert body == {
        "model": "feed",
        "action": "promote",
        "version": 1,
        "previous": None,
        "serving_version": 1,
    }
    assert admin.service.version("feed") == 1  # swapped at once, not at the next poll
    assert admin.post("/v1/models/feed/versions/2:promote")[1]["serving_version"] == 2
    code, body = admin.post("/v1/models/feed:rollback")
    assert code == 200 and body["action"] == "rollback" and body["serving_version"] == 1
    code, body = admin.post("/v1/models/feed/versions/3:reject?reason=NE%20too%20high")
    assert code == 200 and body["action"] == "reject" and body["version"] == 3
    assert admin.registry.get("feed", 3).stage == "rejected"
    assert [e["action"] for e in history(admin.registry, "feed")] == [
        "promote",
        "promote",
        "rollback",
        "reject",
    ]
    assert history(admin.registry, "feed")[-1]["reason"] == "NE too high"
    stages = [(u.model, u.version, u.kind, u.metrics["stage"]) for u in admin.announced]
    assert stages == [
        ("feed", 1, "stage", "production"),
        ("feed", 2, "stage", "production"),
        ("feed", 1, "stage", "production"),
        ("feed", 3, "stage", "rejected"),
    ]


def test_conflicts_and_unknowns(admin: Admin) -> None:
    code, body = admin.post("/v1/models/feed:rollback")
    assert code == 409 and "no production version" in body["error"]
    admin.post("/v1/models/feed/versions/2:promote")
    code, body = admin.post("/v1/models/feed/versions/2:reject")
    assert code == 409 and "roll back or promote another version first" in body["error"]
    code, body = admin.post("/v1/models/feed/versions/9:promote")
    assert code == 404 and "expected version 9" in body["error"]
    code, body = admin.post("/v1/models/ads/versions/1:promote")
    assert code == 404 and "among ['feed']" in body["error"]
    assert admin.service.version("feed") == 2


@pytest.mark.parametrize(
    ("token", "scheme"),
    [
        (None, "Bearer"),
        ("wrong", "Bearer"),
        (TOKEN + "x", "Bearer"),
        (TOKEN, "Basic"),
        ("", "Bearer"),
    ],
)
def test_a_missing_or_wrong_token_is_401_and_changes_nothing(
    admin: Admin, token: str | None, scheme: str
) -> None:
    code, body = admin.post("/v1/models/ads/versions/1:promote", token, scheme)  # even unknown
    assert code == 401 and "Bearer <admin token>" in body["error"]
    code, _ = admin.post("/v1/models/feed/versions/1:promote", token, scheme)
    assert code == 401
    assert admin.registry.get("feed", 1).stage == "none" and admin.announced == []


def test_without_a_token_admin_is_off(tmp_path: Path) -> None:
    off = Admin(tmp_path, None)
    try:
        for path in ("/v1/models/feed/versions/1:promote", "/v1/models/feed:rollback"):
            code, body = off.post(path)
            assert code == 404 and "admin endpoints are off" in body["error"]
        assert off.registry.get("feed", 1).stage == "none"
    finally:
        off.server.stop()
