"""Model sessions and the prediction service: score requests, swap model versions safely.

A :class:`ModelSession` is one model version loaded into onnxruntime (one thread,
sequential execution, CPU) and warmed up. :class:`PredictionService` keeps the current
session of every served model in an immutable mapping; :meth:`PredictionService.load`
builds and validates a new session aside and then replaces the mapping with one
reference assignment, so a request in flight always finishes on the session it
started with and a bad snapshot never replaces a good one.

A model may also have a *shadow* session (:meth:`PredictionService.load_shadow`: the
registry's newest candidate, see ``FileRegistry.shadow_version``). A CTR request is then
scored by both — one more onnxruntime run; the featurised rows are shared when the two
specs agree — and the shadow's scores go into the feature log beside production's, while
only production's answer is returned. A shadow that fails is dropped for that request,
never failing it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec, Featuriser
from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.serving.candidates import (
    CandidateFeaturiser,
    Candidates,
    FeatureLog,
    FeatureSource,
)
from streamlearn.serving.errors import (
    BadRequest,
    ModelNotFound,
    ModelNotReady,
    SnapshotRejected,
    VersionNotFound,
)
from streamlearn.serving.freshness import FreshnessTracker
from streamlearn.serving.metrics import (
    MODEL_SWAPS,
    MODEL_VERSION,
    PREDICT_LATENCY,
    PREDICTIONS,
    SHADOW_ERRORS,
    SHADOW_VERSION,
)
from streamlearn.serving.schema import VisionReply
from streamlearn.serving.vision import check_pixels, image_array
from streamlearn.streams.catalog.features import FeatureCatalog
from streamlearn.streams.contracts import PredictionReply, PredictionRequest, Scalar
from streamlearn.streams.features.store import served_features

log = logging.getLogger(__name__)

KINDS: Final = ("ctr", "vision")
#: Most candidates one request may ask to score.
MAX_CANDIDATES: Final = 1000
_CTR_IO: Final = (["idx", "val"], "prob")
_VISION_IO: Final = (["image"], "probs")


def _session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class ModelSession:
    """One model version in onnxruntime, validated by a warm-up run.

    The constructor raises :class:`SnapshotRejected` when the metadata, the graph's
    inputs and outputs, or the warm-up outputs are not what the model kind requires.
    """

    def __init__(self, model: str, version: int, onnx: bytes, metadata: Mapping[str, Any]) -> None:
        self.model = model
        self.version = version
        self.metadata = dict(metadata)
        self.kind = self.metadata.get("kind")
        #: CTR models: featurises requests' candidates by this version's spec (set by the
        #: service, shared by the versions and models of one spec)
        self.candidates: CandidateFeaturiser | None = None
        where = f"model {model!r} version {version}"
        if self.kind not in KINDS:
            raise SnapshotRejected(f"{where}: expected metadata kind in {KINDS}, got {self.kind!r}")
        try:
            if self.kind == "ctr":
                self._init_ctr()
            else:
                self._init_vision()
            self._ort = ort.InferenceSession(
                onnx, _session_options(), providers=["CPUExecutionProvider"]
            )
        except SnapshotRejected as exc:
            raise SnapshotRejected(f"{where}: {exc}") from None
        except (ModelError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotRejected(f"{where}: bad metadata: {exc!r}") from None
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SnapshotRejected(f"{where}: onnxruntime cannot load the graph: {exc}") from None
        self._check_io(where)
        self._warm_up(where)

    @classmethod
    def from_registry(cls, registry: FileRegistry, mv: ModelVersion) -> ModelSession:
        """Load ``mv``'s graph and metadata from ``registry``."""
        try:
            onnx = registry.read_onnx(mv)
        except ModelError as exc:
            raise SnapshotRejected(str(exc)) from None
        return cls(mv.model, mv.version, onnx, mv.metadata)

    def _init_ctr(self) -> None:
        self.featuriser = Featuriser(FeatureSpec.from_dict(self.metadata["feature_spec"]))
        self._io = _CTR_IO

    def _init_vision(self) -> None:
        c, h, w = (int(d) for d in self.metadata["input_shape"])
        self.input_shape = (c, h, w)
        self.classes = [str(x) for x in self.metadata["classes"]]
        self._mean = np.asarray(self.metadata.get("mean", 0.0), np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(self.metadata.get("std", 1.0), np.float32).reshape(-1, 1, 1)
        if self._mean.shape[0] not in (1, c) or self._std.shape[0] not in (1, c):
            raise SnapshotRejected(f"expected mean/std with 1 or {c} values")
        if not np.all(self._std > 0):
            raise SnapshotRejected(f"expected std > 0, got {self._std.ravel().tolist()}")
        self._io = _VISION_IO

    def _check_io(self, where: str) -> None:
        inputs, output = self._io
        got_in = sorted(i.name for i in self._ort.get_inputs())
        got_out = [o.name for o in self._ort.get_outputs()]
        if got_in != sorted(inputs) or output not in got_out:
            raise SnapshotRejected(
                f"{where}: expected a {self.kind} graph with inputs {inputs} and output "
                f"{output!r}, got inputs {got_in} and outputs {got_out}"
            )

    def _warm_up(self, where: str) -> None:
        try:
            if self.kind == "ctr":
                out = self.score([{}, {"user_id": "warm-up", "item_id": "warm-up"}])
                ok = out.shape == (2,) and bool(np.all((out >= 0.0) & (out <= 1.0)))
                want = "probabilities of shape (2,) in [0, 1]"
            else:
                out = self.classify(np.zeros((2, *self.input_shape), np.float32))
                ok = out.shape == (2, len(self.classes)) and bool(np.isfinite(out).all())
                want = f"finite probabilities of shape (2, {len(self.classes)})"
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise SnapshotRejected(f"{where}: warm-up run failed: {exc}") from None
        if not ok:
            raise SnapshotRejected(
                f"{where}: warm-up expected {want}, got shape {out.shape} "
                f"values {out.ravel()[:4].tolist()}"
            )

    def score(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """CTR models: probabilities (float32 ``(n,)``) of raw feature rows."""
        return self.score_featurised(*self.featuriser.transform_many(rows))

    def score_featurised(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        """CTR models: probabilities (float32 ``(n,)``) of featurised rows."""
        out: np.ndarray = self._ort.run(["prob"], {"idx": idx, "val": val})[0]
        return out.reshape(-1)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Vision models: class probabilities ``(n, n_classes)`` of ``[n, C, H, W]`` in [0, 1]."""
        x = ((images - self._mean) / self._std).astype(np.float32, copy=False)
        out: np.ndarray = self._ort.run(["probs"], {"image": x})[0]
        return out


class PredictionService:
    """The current session of every served model, and predictions with them."""

    def __init__(
        self,
        registry: FileRegistry,
        features: FeatureSource,
        models: Sequence[str],
        catalog: FeatureCatalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not models:
            raise ValueError("expected at least one model to serve, got none")
        self.registry = registry
        self.models = tuple(dict.fromkeys(models))
        self._features = features
        self._clock = clock
        self.catalog = catalog
        self._served = served_features(catalog)
        self._featurisers: dict[FeatureSpec, CandidateFeaturiser] = {}
        self._featurisers_lock = threading.Lock()
        self._sessions: Mapping[str, ModelSession] = MappingProxyType({})
        self._shadows: Mapping[str, ModelSession] = MappingProxyType({})
        self._load_lock = threading.Lock()
        self.freshness = FreshnessTracker(registry)
        self._metrics = {m: (PREDICTIONS.labels(m), PREDICT_LATENCY.labels(m)) for m in self.models}
        for m in self.models:
            MODEL_VERSION.labels(m).set(0)

    def _session(self, mv: ModelVersion) -> ModelSession:
        """``mv`` loaded, warmed up and validated, its candidates' featuriser attached (one
        per feature spec, so its per-entity parts outlive the versions)."""
        sess = ModelSession.from_registry(self.registry, mv)
        if sess.kind == "ctr":
            spec = sess.featuriser.spec
            unknown = self._served.unknown_inputs(spec)
            if unknown:
                raise SnapshotRejected(
                    f"model {mv.model!r} version {mv.version} reads {unknown}, which the "
                    "project does not declare: it would score them as missing; serve a "
                    "version trained on the project's features"
                )
            with self._featurisers_lock:
                cf = self._featurisers.get(spec)
                if cf is None:
                    cf = self._featurisers[spec] = CandidateFeaturiser(
                        sess.featuriser, self._served
                    )
            sess.candidates = cf
        return sess

    def session(self, model: str, version: int | None = None) -> ModelSession:
        """The current session of ``model``; :class:`ModelNotFound` / :class:`ModelNotReady`.

        With ``version``, :class:`VersionNotFound` unless that version is the one serving
        (only the serving version of a model is loaded).
        """
        sess = self._sessions.get(model)
        if sess is not None:
            if version is not None and version != sess.version:
                raise VersionNotFound(
                    f"expected version {sess.version} of model {model!r} (the one serving; "
                    f"only that one is loaded), got {version}"
                )
            return sess
        if model not in self.models:
            raise ModelNotFound(f"expected a model among {list(self.models)}, got {model!r}")
        raise ModelNotReady(
            f"model {model!r} has no version loaded yet: waiting for the first one to be "
            "published to the registry (the online trainer publishes version 1 when it starts)"
        )

    def kind(self, model: str) -> str | None:
        """The kind (``ctr``/``vision``) of ``model``'s loaded version, or ``None``."""
        sess = self._sessions.get(model)
        return None if sess is None else sess.kind

    def version(self, model: str) -> int | None:
        """The version of ``model`` serving now, or ``None``."""
        sess = self._sessions.get(model)
        return None if sess is None else sess.version

    def shadow_version(self, model: str) -> int | None:
        """The version of ``model`` scored as a shadow now, or ``None``."""
        sess = self._shadows.get(model)
        return None if sess is None else sess.version

    def load_shadow(self, model: str, mv: ModelVersion | None) -> None:
        """Score ``model``'s requests with ``mv`` beside production (``None``: stop).

        Raises :class:`SnapshotRejected` when ``mv`` cannot be loaded or is not a CTR
        model (the previous shadow, if any, is dropped)."""
        if model not in self.models:
            raise ModelNotFound(f"expected a model among {list(self.models)}, got {model!r}")
        sess = None
        if mv is not None:
            try:
                sess = self._session(mv)
                if sess.kind != "ctr":
                    raise SnapshotRejected(f"model {model!r} version {mv.version}: not a CTR model")
            except SnapshotRejected:
                MODEL_SWAPS.labels(model, "shadow_rejected").inc()
                self._set_shadow(model, None)
                raise
        self._set_shadow(model, sess)
        log.info("model=%s shadow version now %s", model, None if sess is None else sess.version)

    def _set_shadow(self, model: str, sess: ModelSession | None) -> None:
        with self._load_lock:
            shadows = {m: s for m, s in self._shadows.items() if m != model}
            if sess is not None:
                shadows[model] = sess
            self._shadows = MappingProxyType(shadows)
        SHADOW_VERSION.labels(model).set(0 if sess is None else sess.version)

    def load(self, mv: ModelVersion) -> ModelSession:
        """Build, warm up and validate ``mv`` aside, then swap it in.

        Raises :class:`SnapshotRejected` (the current session keeps serving) or
        :class:`ModelNotFound` when ``mv`` is of a model not served here.
        """
        if mv.model not in self.models:
            raise ModelNotFound(f"expected a model among {list(self.models)}, got {mv.model!r}")
        with self._load_lock:
            started = time.perf_counter()
            try:
                sess = self._session(mv)
            except SnapshotRejected as exc:
                MODEL_SWAPS.labels(mv.model, "rejected").inc()
                log.error("rejected %s; version %s keeps serving", exc, self.version(mv.model))
                raise
            old = self.version(mv.model)
            self._sessions = MappingProxyType({**self._sessions, mv.model: sess})
            swapped_at = self._clock()
        MODEL_SWAPS.labels(mv.model, "swapped").inc()
        MODEL_VERSION.labels(mv.model).set(mv.version)
        log.info(
            "model=%s now serving version %d (was %s), loaded in %.1f ms",
            mv.model,
            mv.version,
            old,
            (time.perf_counter() - started) * 1e3,
        )
        self.freshness.swapped(mv, swapped_at)
        return sess

    def predict(
        self, model: str, request: PredictionRequest, version: int | None = None
    ) -> tuple[PredictionReply, FeatureLog]:
        """Score ``request``'s candidates; the log record holds exactly what was scored.

        ``version``: answer only if that version is serving (see :meth:`session`).
        """
        started = time.perf_counter()
        sess = self.session(model, version)
        if sess.candidates is None:
            raise BadRequest(
                f"model {model!r} is a {sess.kind} model: expected "
                '{"request_id": str, "image": [[...]] or "image_png_base64": str}, '
                "got a candidate-scoring request"
            )
        if len(request.candidates) > MAX_CANDIDATES:
            raise BadRequest(
                f"expected at most {MAX_CANDIDATES} candidates, got {len(request.candidates)}"
            )
        if request.surface not in self.catalog.schema.surfaces:
            self.catalog.schema.check_surface(request.surface)  # raises, listing them
        now = self._clock()
        user = self._features.user(request.user_id)
        items = self._features.items(request.candidates)
        others = None
        if self._served.others:
            stored = self._features.stored
            others = {e: stored(e, i) for e, i in self._served.entity_ids(request).items()}
        got = sess.candidates.featurise(request, user, items, now, others)
        scores = sess.score_featurised(got.idx, got.val).tolist()
        reply = PredictionReply(request.request_id, model, sess.version, scores)
        shadow = self._shadows.get(model)
        shadow_scores, shadow_version = None, None
        if shadow is not None and shadow.version != sess.version:
            shadow_scores = self._shadow_scores(
                shadow, sess, request, user, items, now, got, others
            )
            shadow_version = None if shadow_scores is None else shadow.version
        record = FeatureLog(
            request.request_id,
            request.user_id,
            request.surface,
            now,
            model,
            sess.version,
            got,
            scores,
            shadow_scores,
            shadow_version,
        )
        count, latency = self._metrics[model]
        count.inc()
        latency.observe(time.perf_counter() - started)
        return reply, record

    def _shadow_scores(
        self,
        shadow: ModelSession,
        production: ModelSession,
        request: PredictionRequest,
        user: Mapping[str, Scalar] | None,
        items: Sequence[Mapping[str, Scalar] | None],
        now: float,
        featurised: Candidates,
        others: Mapping[str, Mapping[str, Scalar] | None] | None = None,
    ) -> list[float] | None:
        """The shadow's scores of the candidates (``None`` when it fails: never the
        request)."""
        try:
            if shadow.candidates is production.candidates:  # the same spec: the same rows
                out = shadow.score_featurised(featurised.idx, featurised.val)
            else:
                assert shadow.candidates is not None
                got = shadow.candidates.featurise(request, user, items, now, others)
                out = shadow.score_featurised(got.idx, got.val)
            scores: list[float] = np.clip(out, 0.0, 1.0).tolist()
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            SHADOW_ERRORS.labels(production.model).inc()
            log.warning(
                "model=%s shadow version %d failed: %s", production.model, shadow.version, exc
            )
            return None
        return scores

    def predict_vision(self, model: str, payload: Mapping[str, Any]) -> VisionReply:
        """Classify one image (a request body of the native API)."""
        started = time.perf_counter()
        sess = self._vision_session(model, None)
        request_id = payload.get("request_id")
        if not isinstance(request_id, str):
            raise BadRequest(f"expected request_id as a string, got {request_id!r}")
        image = image_array(payload, sess.input_shape)
        probs = sess.classify(image[None])[0].tolist()
        PREDICTIONS.labels(model).inc()
        PREDICT_LATENCY.labels(model).observe(time.perf_counter() - started)
        return VisionReply(request_id, model, sess.version, probs, sess.classes)

    def classify(
        self, model: str, images: np.ndarray, version: int | None = None
    ) -> tuple[ModelSession, np.ndarray]:
        """The session used and class probabilities ``(n, n_classes)`` of ``[n, C, H, W]``.

        Each image's pixels are read as in the native API (0–255, or 0–1 when no value
        exceeds 1), so a batch gives what single-image requests give.
        """
        started = time.perf_counter()
        sess = self._vision_session(model, version)
        want = (-1, *sess.input_shape)
        if images.ndim != 4 or images.shape[1:] != sess.input_shape or not len(images):
            raise BadRequest(
                f"expected at least one image, of shape {list(want)}, got {list(images.shape)}"
            )
        scaled = np.stack([check_pixels(img) for img in images])
        probs = sess.classify(scaled.astype(np.float32, copy=False))
        PREDICTIONS.labels(model).inc(len(images))
        PREDICT_LATENCY.labels(model).observe(time.perf_counter() - started)
        return sess, probs

    def _vision_session(self, model: str, version: int | None) -> ModelSession:
        sess = self.session(model, version)
        if sess.kind != "vision":
            raise BadRequest(
                f"model {model!r} is a {sess.kind} model: expected a request with "
                '"request_id", "user_id", "surface" and "candidates", got an image request'
            )
        return sess
