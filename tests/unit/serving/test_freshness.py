"""Serving observes freshness when it swaps a version in: what the new version and the
versions it skipped learned, measured from the swap."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from streamlearn.models.freshness import STAGES, PositivesSample
from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.serving.service import PredictionService
from tests.example import CATALOG
from tests.unit.serving.helpers import DictFeatures, trained_ftrl

T = 1_000_000.0


def _publish(
    registry: FileRegistry, model: str, engaged_at: list[float], lineage: str = "L"
) -> ModelVersion:
    """A version whose positives were engaged with at ``engaged_at``, joined a second
    later and learned two seconds later."""
    sample = PositivesSample()
    for ts in engaged_at:
        sample.add(ts, ts + 1.0, ts + 2.0)
    extra = {"lineage_id": lineage, "freshness": sample.to_metadata()}
    return registry.publish(model, trained_ftrl().snapshot(), extra=extra)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_swaps_observe_the_freshness_of_what_they_serve_first(tmp_path: Path) -> None:
    model = "fresh1"
    registry = FileRegistry(tmp_path)
    clock = [T]
    service = PredictionService(registry, DictFeatures(), [model], CATALOG, clock=lambda: clock[0])
    v1 = _publish(registry, model, [T - 5.0])
    service.load(v1)  # start-up: nothing was served before, nothing counted
    assert _value("streamlearn_freshness_seconds_count", model=model) == 0
    _publish(registry, model, [T + 1.0, T + 2.0])  # v2: never loaded
    v3 = _publish(registry, model, [T + 3.0])
    clock[0] = T + 10.0
    service.load(v3)
    # v2's two positives and v3's one, served from T + 10
    assert _value("streamlearn_freshness_seconds_count", model=model) == 3
    assert _value("streamlearn_freshness_seconds_sum", model=model) == pytest.approx(9 + 8 + 7)
    join = _value("streamlearn_freshness_stage_seconds_sum", model=model, stage="join_wait")
    lag = _value("streamlearn_freshness_stage_seconds_sum", model=model, stage="trainer_lag")
    assert (join, lag) == (pytest.approx(3.0), pytest.approx(3.0))
    stages = sum(
        _value("streamlearn_freshness_stage_seconds_sum", model=model, stage=s) for s in STAGES
    )
    assert stages == pytest.approx(24.0)  # the stages add up to the totals
    assert service.freshness.swapped(v3, T + 11.0) == []  # already counted
    service.load(v1)  # a rollback counts nothing
    assert _value("streamlearn_freshness_seconds_count", model=model) == 3


def test_a_version_of_a_new_lineage_counts_only_itself(tmp_path: Path) -> None:
    model = "fresh2"
    registry = FileRegistry(tmp_path)
    service = PredictionService(registry, DictFeatures(), [model], CATALOG)
    service.load(_publish(registry, model, [T]))
    _publish(registry, model, [T, T], lineage="M")
    service.load(_publish(registry, model, [T], lineage="M"))
    assert _value("streamlearn_freshness_seconds_count", model=model) == 1
