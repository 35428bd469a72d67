import time
from pathlib import Path

from models.registry import FileRegistry
from serving.service import PredictionService
from serving.updates import ModelUpdater
from tests.unit.serving.helpers import (
    DictFeatures,
    constant_graph,
    ctr_metadata,
    publish_ftrl,
    publish_raw,
)


def test_follows_the_serving_version_and_skips_rejected_versions(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), ["feed"])
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
    service = PredictionService(registry, DictFeatures(), ["feed"])
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
