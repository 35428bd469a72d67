import time
from pathlib import Path

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.service import PredictionService
from streamlearn.serving.updates import ModelUpdater
from tests.example import CATALOG
from tests.unit.serving.helpers import (
    DictFeatures,
    constant_graph,
    ctr_metadata,
    publish_ftrl,
    publish_raw,
)


def test_follows_the_serving_version_and_skips_rejected_versions(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed"], CATALOG)
    updater = ModelUpdater(service, kafka=None)
    assert updater.check("feed") is False and service.version("feed") is None
    publish_ftrl(registry)
    assert updater.check("feed") is True and service.version("feed") == 1
    assert updater.check("feed") is False
    publish_raw(registry, constant_graph(float("nan")), ctr_metadata())  # v2: bad
    assert updater.check("feed") is False and service.version("feed") == 1
    assert updater.check("feed") is False  # v2 is not retried
    publish_ftrl(registry, seed=3)
    assert updater.check("feed") is True and service.version("feed") == 3
    registry.set_stage("feed", 1, "production")  # a rollback by stage
    assert updater.check("feed") is True and service.version("feed") == 1


def test_polls_the_registry_without_a_broker(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path)
    publish_ftrl(registry)
    service = PredictionService(registry, DictFeatures(), ["feed"], CATALOG)
    updater = ModelUpdater(service, kafka=None, poll_interval_s=0.05).start()
    try:
        assert service.version("feed") == 1  # loaded synchronously by start()
        publish_ftrl(registry, seed=1)
        deadline = time.monotonic() + 5.0
        while service.version("feed") != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert service.version("feed") == 2
    finally:
        updater.stop()


def test_announcements_older_than_the_serving_version_are_not_checked(tmp_path: Path) -> None:
    from confluent_kafka import Message

    from streamlearn.streams.contracts import ModelUpdate, encode

    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed"], CATALOG)
    updater = ModelUpdater(service, kafka=None)
    publish_ftrl(registry)
    publish_ftrl(registry, seed=1)
    checked: list[str] = []
    real = updater.check
    updater.check = lambda model: checked.append(model) or real(model)  # type: ignore[method-assign]

    def msg(version: int, kind: str = "published") -> Message:
        upd = ModelUpdate(model="feed", version=version, created_at=1.0, kind=kind)  # type: ignore[arg-type]
        return Message(topic="t", partition=0, offset=version, value=encode(upd))

    updater._on_updates([msg(1), msg(2)])
    assert checked == ["feed"] and service.version("feed") == 2
    updater._on_updates([msg(1), msg(2)])  # the topic read from its start again
    assert checked == ["feed"]
    updater._on_updates([msg(1, "stage")])  # a stage change is always checked
    assert checked == ["feed", "feed"]
