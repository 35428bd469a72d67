import threading
from pathlib import Path

import numpy as np
import pytest

from streamlearn.models.registry import FileRegistry
from streamlearn.serving.errors import BadRequest, ModelNotFound, ModelNotReady, SnapshotRejected
from streamlearn.serving.metrics import MODEL_SWAPS
from streamlearn.serving.service import MAX_CANDIDATES, PredictionService
from streamlearn.streams.contracts import FeatureLogRecord, decode
from tests.example import CATALOG, serving_features
from tests.unit.serving.helpers import (
    SPEC,
    VISION_CLASSES,
    DictFeatures,
    constant_graph,
    ctr_metadata,
    publish_ftrl,
    publish_raw,
    request,
    trained_ftrl,
    vision_graph,
    vision_metadata,
)

NOW = 1_700_000_100.0
USERS = {"u1": {"user_impressions": 10, "user_ctr": 0.2, "user_last_event_ts": NOW - 30.0}}
ITEMS = {"i1": {"item_impressions": 50, "item_category": "shoes", "item_last_event_ts": NOW - 5}}


@pytest.fixture
def registry(tmp_path: Path) -> FileRegistry:
    return FileRegistry(tmp_path / "registry")


@pytest.fixture
def service(registry: FileRegistry) -> PredictionService:
    return PredictionService(
        registry, DictFeatures(USERS, ITEMS), ["feed"], CATALOG, clock=lambda: NOW
    )


def test_scores_match_the_learner_and_log_what_was_scored(
    registry: FileRegistry, service: PredictionService
) -> None:
    mv = publish_ftrl(registry)
    service.load(mv)
    req = request(["i0", "i1", "i2"])
    reply, served = service.predict("feed", req)
    log = decode(FeatureLogRecord, served.encode())  # as the feature log's readers see it

    rows = [serving_features(req, c, USERS["u1"], ITEMS.get(c), NOW) for c in req.candidates]
    expected = trained_ftrl().predict_proba_many(rows)
    assert (reply.request_id, reply.model, reply.version) == ("r1", "feed", mv.version)
    np.testing.assert_allclose(reply.scores, expected, atol=1e-5)
    assert reply.scores[1] > reply.scores[0]  # the model learnt that i1 gets clicks
    assert (log.request_id, log.user_id, log.surface, log.ts) == ("r1", "u1", "feed", NOW)
    assert (log.model, log.version) == ("feed", mv.version)
    assert [i.item_id for i in log.items] == req.candidates
    assert [i.features for i in log.items] == rows
    assert [i.score for i in log.items] == reply.scores
    assert log.items[1].features["item_category"] == "shoes"
    assert log.items[1].features["item_recency_s"] == 5.0
    assert log.items[0].features["ctx_hour"] == 9


def test_not_ready_unknown_model_and_too_many_candidates(
    registry: FileRegistry, service: PredictionService
) -> None:
    with pytest.raises(ModelNotReady, match="no version loaded yet"):
        service.predict("feed", request(["i1"]))
    with pytest.raises(ModelNotFound, match=r"among \['feed'\], got 'ads'"):
        service.predict("ads", request(["i1"]))
    service.load(publish_ftrl(registry))
    with pytest.raises(BadRequest, match=f"at most {MAX_CANDIDATES} candidates"):
        service.predict("feed", request([f"i{i}" for i in range(MAX_CANDIDATES + 1)]))
    with pytest.raises(BadRequest, match="ctr model"):
        service.predict_vision("feed", {"request_id": "r", "image": [[0]]})


@pytest.mark.parametrize(
    ("onnx_bytes", "metadata", "message"),
    [
        (b"not an onnx graph", ctr_metadata(), "onnxruntime cannot load"),
        (constant_graph(float("nan")), ctr_metadata(), "warm-up expected probabilities"),
        (constant_graph(0.5, output="score"), ctr_metadata(), "output 'prob'"),
        (constant_graph(0.5), {**ctr_metadata(), "kind": "ranking"}, "kind in"),
        (constant_graph(0.5), {**ctr_metadata(), "feature_spec": {"bogus": 1}}, "bad metadata"),
        (vision_graph(), ctr_metadata(), "inputs \\['idx', 'val'\\]"),
        (
            constant_graph(0.5),
            {
                **ctr_metadata(),
                "feature_spec": {**SPEC.to_dict(), "numeric": ["user_rate", *SPEC.numeric[1:]]},
            },
            r"reads \['user_rate'\], which the project does not declare",
        ),
    ],
)
def test_a_bad_snapshot_is_rejected_and_the_old_one_keeps_serving(
    registry: FileRegistry,
    service: PredictionService,
    onnx_bytes: bytes,
    metadata: dict,
    message: str,
) -> None:
    good = publish_ftrl(registry)
    service.load(good)
    before, _ = service.predict("feed", request(["i1"]))
    rejected = MODEL_SWAPS.labels("feed", "rejected")._value.get()
    bad = publish_raw(registry, onnx_bytes, metadata)
    with pytest.raises(SnapshotRejected, match=message):
        service.load(bad)
    after, _ = service.predict("feed", request(["i1"]))
    assert after.version == good.version == service.version("feed")
    assert after.scores == before.scores
    assert MODEL_SWAPS.labels("feed", "rejected")._value.get() == rejected + 1


def test_hot_swap_under_load_fails_no_request(
    registry: FileRegistry, service: PredictionService
) -> None:
    versions = [publish_ftrl(registry, seed=s) for s in range(21)]
    service.load(versions[0])
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[int]] = []

    def hammer() -> None:
        mine: set[int] = set()
        seen.append(mine)
        last = 0
        while not stop.is_set():
            try:
                reply, log = service.predict("feed", request(["i0", "i1", "i2"]))
                assert reply.version == log.version >= last  # never goes back
                assert len(reply.scores) == 3 and all(0 < s < 1 for s in reply.scores)
                last = reply.version
                mine.add(reply.version)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for mv in versions[1:]:
        service.load(mv)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert service.version("feed") == versions[-1].version
    assert len(set().union(*seen)) > 1  # requests really ran across swaps


def test_vision_model(registry: FileRegistry) -> None:
    svc = PredictionService(registry, DictFeatures(), ["digits"], CATALOG)
    svc.load(publish_raw(registry, vision_graph(), vision_metadata(), model="digits"))
    bright = svc.predict_vision("digits", {"request_id": "v1", "image": [[255] * 4] * 4})
    dark = svc.predict_vision("digits", {"request_id": "v2", "image": [[[0.0] * 4] * 4]})
    assert bright.classes == VISION_CLASSES and bright.version == 1
    assert bright.request_id == "v1" and bright.model == "digits"
    assert np.argmax(bright.probs) == 2 and np.argmax(dark.probs) == 0
    assert sum(bright.probs) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(BadRequest, match="expected image of shape 4×4, got 3×4"):
        svc.predict_vision("digits", {"request_id": "v3", "image": [[0] * 4] * 3})
    with pytest.raises(BadRequest, match="vision model"):
        svc.predict("digits", request(["i1"]))


def test_vision_png_is_resized_and_bad_png_is_a_bad_request(registry: FileRegistry) -> None:
    import base64
    import io

    from PIL import Image

    svc = PredictionService(registry, DictFeatures(), ["digits"], CATALOG)
    svc.load(publish_raw(registry, vision_graph(), vision_metadata(), model="digits"))
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (250, 250, 250)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    out = svc.predict_vision("digits", {"request_id": "p", "image_png_base64": png})
    assert np.argmax(out.probs) == 2
    with pytest.raises(BadRequest, match="base64-encoded PNG"):
        svc.predict_vision("digits", {"request_id": "p", "image_png_base64": "bm90IGEgcG5n"})
    with pytest.raises(BadRequest, match='"image"'):
        svc.predict_vision("digits", {"request_id": "p"})
