"""The online trainer's side of evaluation and rollout: per-version live figures, the
candidate arm, automatic promotion, rejection and rollback.

:class:`Rollout` is owned by one :class:`~streamlearn.streams.learning.trainer.OnlineTrainer` and
sees every labelled example it learns. It keeps:

* **per-version evaluation** (``streamlearn.models.evaluation``): each example's ``served_score``
  against its label under ``served_version``, its ``shadow_score`` under
  ``shadow_version``, and the production learner's predict-before-learn under the version
  it becomes. Written after each publish to ``evaluation.json`` of every version that
  changed, exported as ``streamlearn_version_metric{model, version, traffic, metric}``
  for the newest ``metrics_versions`` versions (older series are removed), and kept with
  each full snapshot in a file of its own (``rollout.json``, not in its metadata: every
  reader of the registry reads metadata, only a restarting trainer needs this), so a
  restarted trainer resumes them with the offsets they cover (exactly once, like the
  learner).
* **the candidate arm**. Serving scores the newest ``candidate`` version beside
  production (a shadow). The trainer loads that candidate's learner (its ONNX graph is
  checked against it on recent real rows first), and from then on the candidate learns
  every example too (every arm trains on the full stream); at each snapshot its state is
  published as a new ``candidate`` version (``origin: shadow``, ``arm_of`` the candidate
  it started from), which serving then shadows. Examples scored by one of the arm's
  versions go into a paired comparison (``streamlearn.models.rollout.Comparison``):
  production's score and the candidate's on the same requests.
* **decisions**, at each publish. Once ``min_examples`` have joined, the candidate is
  *rejected* (every version of the arm: never served) or *promoted*: its learner becomes
  the production lineage, i.e. the trainer continues from it (a new lineage, from the
  current offsets: the arm learned everything since it entered) and the next version it
  publishes is served; the promoted version becomes ``archived`` (the lineage's versions
  are served as the newest, never pinned). The old production learner keeps learning as
  a fallback while the promoted lineage is watched (``streamlearn.models.rollout.Watch``); if its
  served NE regresses past the threshold the trainer *rolls back*: the fallback becomes
  the production lineage again and the promoted version is rejected. Every decision is
  recorded in the registry history with its reason and figures (``streamlearn.models.stages``) and
  announced on ``model-updates``.

After a restart the candidate arm reloads from its newest published version and the
fallback from the newest full version of the lineage it replaced; a candidate arm may
learn up to one snapshot interval twice or not at all around a crash (the production
lineage stays exactly once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from prometheus_client import Counter, Gauge

from streamlearn.models.errors import ModelError
from streamlearn.models.evaluation import TRAFFICS, ScoreTally, VersionEvaluation
from streamlearn.models.features import FeatureSpec
from streamlearn.models.parity import PARITY_ROWS, ParityError, onnx_parity
from streamlearn.models.protocol import Learner
from streamlearn.models.registry import FileRegistry, ModelVersion, Stage
from streamlearn.models.rollout import Comparison, Decision, RolloutConfig, Watch
from streamlearn.models.snapshot import Snapshot
from streamlearn.models.stages import (
    StageChange,
    decisions,
    promote_lineage,
    reject,
    rollback_lineage,
)
from streamlearn.streams.contracts import ModelUpdate, encode, stage_update
from streamlearn.streams.kafka.topics import Topics
from streamlearn.streams.learning.examples import Examples
from streamlearn.streams.runtime.processor import Output

log = logging.getLogger(__name__)

VERSION_METRIC = Gauge(
    "streamlearn_version_metric",
    "Live evaluation per model version: traffic served (its answers), shadow (scored "
    "beside production) or progressive (predict-before-learn); the newest versions only.",
    ["model", "version", "traffic", "metric"],
)
DECISIONS = Counter(
    "streamlearn_rollout_decisions_total",
    "Automatic rollout decisions: promote, reject, rollback.",
    ["model", "action"],
)
PARITY_FAILURES = Counter(
    "streamlearn_parity_failures_total",
    "Versions whose ONNX graph did not match their learner (never served).",
    ["model", "arm"],
)
_METRICS: Final = ("count", "auc", "ne", "calibration", "logloss")
#: The file of a full snapshot that holds the rollout's state (:meth:`Rollout.files`).
ROLLOUT_FILE: Final = "rollout.json"
#: origin of the candidate arm's versions
SHADOW: Final = "shadow"


@dataclass
class _Challenger:
    learner: Learner
    comparison: Comparison
    #: the candidate's versions: the one it started from, then the arm's
    versions: list[int]
    progressive: ScoreTally = field(default_factory=ScoreTally)
    learned: int = 0

    @property
    def root(self) -> int:
        return self.comparison.candidate


@dataclass
class Switch:
    """The production lineage changed: the trainer continues from ``learner``."""

    learner: Learner
    parent_version: int
    action: str


class Rollout:
    """Per-version evaluation and the automatic rollout of one model (module docstring)."""

    def __init__(
        self,
        registry: FileRegistry,
        topics: Topics,
        model: str,
        config: RolloutConfig,
        keep_versions: int = 64,
        metrics_versions: int = 5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self.topics = topics
        #: whether candidate arms are taken in (not yet with several trainer ranks)
        self.arms = True
        self.model = model
        self.config = config
        self.evaluation = VersionEvaluation(keep_versions)
        self.metrics_versions = metrics_versions
        self.challenger: _Challenger | None = None
        self.watch: Watch | None = None
        self.fallback: Learner | None = None
        #: production's predict-before-learn since the last publish
        self.progressive = ScoreTally()
        #: predict-before-learn on replayed examples (serving never scored them)
        self.replayed = ScoreTally()
        #: the newest examples learned, covering at least PARITY_ROWS rows, and the rows
        #: restored with a snapshot (before them): see ``sample_rows``
        self._recent: list[Examples] = []
        self._restored: list[dict[str, Any]] = []
        self._exported: set[int] = set()
        self._outputs: list[Output] = []
        self._clock = clock or time.time

    # -- resume ----------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """The files a full snapshot carries (``registry.publish(files=…)``)."""
        return {ROLLOUT_FILE: json.dumps(self.state(), sort_keys=True).encode()}

    def state(self) -> dict[str, Any]:
        """What a full snapshot carries (JSON-safe)."""
        ch = self.challenger
        return {
            "evaluation": self.evaluation.to_dict(),
            # the snapshot's own predict-before-learn: it goes to the snapshot's version
            # (``published`` runs after the files are written), so a resumed trainer
            # counts those examples under it, once
            "progressive": self.progressive.to_dict(),
            "challenger": None
            if ch is None
            else {"comparison": ch.comparison.to_dict(), "versions": ch.versions},
            "watch": None if self.watch is None else self.watch.to_dict(),
        }

    def resume(self, mv: ModelVersion) -> None:
        """Restore from the state full snapshot ``mv`` carries (learners from the
        registry); a version published before that state had a file of its own carries it
        in its metadata (``rollout``)."""
        try:
            raw = self.registry.read_file(mv, ROLLOUT_FILE)
            data = (mv.metadata.get("rollout") or {}) if raw is None else json.loads(raw)
            self.evaluation = VersionEvaluation.from_dict(
                data.get("evaluation"), self.evaluation.keep
            )
            if data.get("progressive"):
                self.evaluation.set(
                    mv.version, "progressive", ScoreTally.from_dict(data["progressive"])
                )
            ch = data.get("challenger")
            if ch:
                versions = [int(v) for v in ch["versions"]]
                learner = self._load(versions[-1])
                if learner is not None:
                    self.challenger = _Challenger(
                        learner, Comparison.from_dict(ch["comparison"]), versions
                    )
            w = data.get("watch")
            if w:
                watch = Watch.from_dict(w)
                fallback = self._load(watch.fallback_version or watch.previous)
                if fallback is not None:
                    self.watch, self.fallback = watch, fallback
                else:
                    log.warning(
                        "model=%s: the fallback of promoted version %d cannot be loaded; "
                        "the promotion is kept without its watch",
                        self.model,
                        watch.promoted,
                    )
        except (ModelError, KeyError, TypeError, ValueError) as exc:
            log.warning("model=%s: rollout state not resumed (%s)", self.model, exc)

    def _load(self, version: int | None) -> Learner | None:
        if not version:
            return None
        try:
            return self.registry.load_learner(self.registry.get(self.model, version))
        except ModelError as exc:
            log.warning("model=%s version=%d: learner not loaded: %s", self.model, version, exc)
            return None

    # -- learning --------------------------------------------------------------------------
    def learned(self, examples: Examples, p: np.ndarray, production: Learner) -> None:
        """``examples`` the production learner has just scored (``p``) and learned: the
        arms learn them too, and every figure counts them."""
        y = examples.y
        self.keep_rows(examples)
        self.record(
            y,
            p,
            examples.served_version,
            examples.served_score,
            examples.shadow_version,
            examples.shadow_score,
        )
        for learner, tally in self._arms(production):
            try:
                if learner.featuriser.spec == production.featuriser.spec:
                    a_idx, a_val = examples.idx, examples.val
                else:
                    a_idx, a_val = learner.featuriser.transform_lists(len(examples), examples.raw)
                pa = learner.predict_learn_featurised(a_idx, a_val, y)
            except Exception as exc:  # an arm must never stop production's learning
                self._drop_arm(learner, f"failed while learning: {type(exc).__name__}: {exc}")
                continue
            if tally is not None:
                tally.update(y, pa)
        if self.challenger is not None:
            self.challenger.learned += len(examples)

    def record(
        self,
        y: np.ndarray,
        p: np.ndarray,
        served_v: np.ndarray,
        served_p: np.ndarray,
        shadow_v: np.ndarray,
        shadow_p: np.ndarray,
    ) -> None:
        """Count labelled examples in the figures: production's predict-before-learn ``p``,
        the versions that served them (``served_v``, ``served_p``; 0: an impression of a
        replayed log, kept apart) and the shadows that scored them (``shadow_v``, 0 for
        none). Several trainer ranks' examples are counted here by rank 0, at each round."""
        self.progressive.update(y, p)
        served = served_v > 0
        if not served.all():  # impressions of a replayed log: no served score, kept apart
            self.replayed.update(y[~served], p[~served])
            if not served.any():
                return
            y, served_v, served_p = y[served], served_v[served], served_p[served]
            shadow_v, shadow_p = shadow_v[served], shadow_p[served]
        self.evaluation.add("served", served_v, y, served_p)
        sel = np.flatnonzero(shadow_v > 0)
        if len(sel):
            self.evaluation.add("shadow", shadow_v[sel], y[sel], shadow_p[sel])
            ch = self.challenger
            if ch is not None:
                mine = np.isin(shadow_v[sel], ch.versions)
                if mine.any():
                    ch.comparison.add(y[sel][mine], served_p[sel][mine], shadow_p[sel][mine])
        if self.watch is not None:
            covered = self.watch.covers(served_v)
            self.watch.served.update(y[covered], served_p[covered])

    def keep_rows(self, examples: Examples) -> None:
        """Keep the newest raw rows learned (ONNX parity checks run on them)."""
        self._recent.append(examples)
        while len(self._recent) > 1 and sum(map(len, self._recent[1:])) >= PARITY_ROWS:
            self._recent.pop(0)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Raw rows another trainer rank learned, for parity checks when this rank has
        too few of its own."""
        self._restored = (self._restored + list(rows))[-PARITY_ROWS:]

    @property
    def sample_rows(self) -> list[dict[str, Any]]:
        """The newest raw feature rows learned (up to ``PARITY_ROWS``): ONNX parity checks
        run on them; published with each full version and restored with it (set)."""
        rows = [r for ex in self._recent for r in ex.rows(max(0, len(ex) - PARITY_ROWS))]
        if len(rows) < PARITY_ROWS:
            rows = self._restored + rows
        return rows[-PARITY_ROWS:]

    @sample_rows.setter
    def sample_rows(self, rows: list[dict[str, Any]]) -> None:
        self._restored = list(rows)[-PARITY_ROWS:]
        self._recent = []

    def specs(self) -> list[FeatureSpec]:
        """The feature specs of the arms (a candidate may read other features)."""
        return [learner.featuriser.spec for learner, _ in self._arms(None)]

    def _drop_arm(self, learner: Learner, why: str) -> None:
        ch = self.challenger
        if ch is not None and learner is ch.learner:
            self._reject_arm(ch, why, ch.comparison.figures())
        elif learner is self.fallback:
            log.error("model=%s: the fallback %s; the promotion is kept", self.model, why)
            self.watch, self.fallback = None, None

    def _arms(self, production: Learner | None) -> list[tuple[Learner, ScoreTally | None]]:
        arms: list[tuple[Learner, ScoreTally | None]] = []
        if self.challenger is not None:
            arms.append((self.challenger.learner, self.challenger.progressive))
        if self.fallback is not None and self.fallback is not production:
            arms.append((self.fallback, None))
        return arms

    # -- decisions -------------------------------------------------------------------------
    def decide(self, current_version: int, resume_version: int | None = None) -> Switch | None:
        """Take in a new candidate; promote, reject or roll back when the figures say so.

        ``current_version`` is the production lineage's newest version, ``resume_version``
        its newest full one. Returns the new production learner when the lineage changes
        (the trainer then continues from it and publishes a full version at once)."""
        if not self.config.enabled:
            return None
        self._follow_candidates()
        ch = self.challenger
        if ch is not None:
            d = ch.comparison.decide(self.config)
            if d is not None and d.action == "reject":
                self._reject_arm(ch, d.reason, d.figures)
            elif d is not None and d.action == "promote":
                return self._promote(ch, d, current_version, resume_version)
        if self.watch is not None and self.fallback is not None:
            d = self.watch.decide(self.config)
            if d is not None and d.action == "rollback":
                return self._rollback(self.watch, self.fallback, d)
            if d is not None:
                log.info(
                    "model=%s promotion of version %d kept: %s",
                    self.model,
                    self.watch.promoted,
                    d.reason,
                )
                self.watch, self.fallback = None, None
        return None

    def _follow_candidates(self) -> None:
        """The newest candidate is the one compared (serving shadows it): take it in."""
        if not self.arms:
            return
        try:
            cand = self.registry.shadow_version(self.model)
        except ModelError as exc:
            log.error("model=%s: cannot read the registry: %s", self.model, exc)
            return
        ch = self.challenger
        if cand is None:
            if (
                ch is not None
                and self.registry.get(self.model, ch.versions[-1]).stage != Stage.CANDIDATE
            ):
                log.info("model=%s: candidate %d is no longer a candidate", self.model, ch.root)
                self.challenger = None
            return
        if ch is not None and (
            cand.version in ch.versions or cand.metadata.get("arm_of") == ch.root
        ):
            if cand.version not in ch.versions:
                ch.versions.append(cand.version)
            return
        learner = self._enter(cand)
        if learner is None:
            return
        if ch is not None:
            self._reject_arm(ch, f"superseded by candidate {cand.version}", ch.comparison.figures())
        self.challenger = _Challenger(learner, Comparison(cand.version), [cand.version])
        log.info(
            "model=%s: candidate version %d entered as the shadow arm", self.model, cand.version
        )

    def _enter(self, cand: ModelVersion) -> Learner | None:
        """The candidate's learner, its graph checked on recent rows; rejected if not
        (``None`` without a decision while there is no row to check it on)."""
        if not self.sample_rows:
            log.debug("model=%s: candidate %d waits for rows", self.model, cand.version)
            return None
        try:
            learner = self.registry.load_learner(cand)
            snap = Snapshot(self.registry.read_onnx(cand), b"", cand.metadata)
            idx, val = learner.featuriser.transform_many(self.sample_rows)
            diff = onnx_parity(snap, learner, idx, val)
        except ParityError as exc:
            PARITY_FAILURES.labels(self.model, "candidate").inc()
            self._reject(cand.version, f"ONNX parity: {exc}", {"max_abs_diff": exc.max_abs_diff})
            return None
        except ModelError as exc:
            self._reject(cand.version, f"cannot load its learner: {exc}", {})
            return None
        log.info(
            "model=%s candidate %d: parity %.2g on %d rows",
            self.model,
            cand.version,
            diff,
            len(self.sample_rows),
        )
        return learner

    def _reject(self, version: int, reason: str, figures: dict[str, Any]) -> None:
        try:
            change = reject(self.registry, self.model, version, reason, figures)
        except ModelError as exc:
            log.error("model=%s: cannot reject version %d: %s", self.model, version, exc)
            return
        DECISIONS.labels(self.model, "reject").inc()
        self._announce(change, figures, reason)
        log.warning("model=%s rejected version %d: %s %s", self.model, version, reason, figures)

    def _reject_arm(self, ch: _Challenger, reason: str, figures: dict[str, Any]) -> None:
        for v in ch.versions[1:]:
            self._set_stage(v, Stage.REJECTED)
        self._reject(ch.root, reason, figures)
        self.challenger = None

    def _set_stage(self, version: int, stage: Stage) -> None:
        try:
            self.registry.set_stage(self.model, version, stage)
        except ModelError as exc:
            log.warning("model=%s: version %d not set %s: %s", self.model, version, stage, exc)

    def _promote(self, ch: _Challenger, d: Decision, current: int, resume: int | None) -> Switch:
        winner = ch.versions[-1]
        for v in ch.versions:
            if v != winner:
                self._set_stage(v, Stage.ARCHIVED)
        change = promote_lineage(self.registry, self.model, winner, d.reason, d.figures)
        DECISIONS.labels(self.model, "promote").inc()
        self._announce(change, d.figures, d.reason)
        log.warning(
            "model=%s promoted candidate %d (as version %d): %s %s",
            self.model,
            ch.root,
            winner,
            d.reason,
            d.figures,
        )
        reference = ch.comparison.production.ne
        self.challenger = None
        if reference is not None:
            self.watch = Watch(winner, current or None, 0, reference, fallback_version=resume)
        return Switch(ch.learner, winner, "promote")

    def _rollback(self, watch: Watch, fallback: Learner, d: Decision) -> Switch:
        to = watch.previous or watch.promoted
        change = StageChange(self.model, to, watch.promoted, "rollback")
        try:
            change = rollback_lineage(
                self.registry, self.model, to, watch.promoted, d.reason, d.figures
            )
        except ModelError as exc:
            log.error("model=%s: rollback not recorded: %s", self.model, exc)
        DECISIONS.labels(self.model, "rollback").inc()
        self._announce(change, d.figures, d.reason)
        log.warning(
            "model=%s rolled back the promotion of %d: %s %s",
            self.model,
            watch.promoted,
            d.reason,
            d.figures,
        )
        self.watch, self.fallback = None, None
        return Switch(fallback, to, "rollback")

    def switched(self, old_production: Learner, switch: Switch) -> None:
        """The trainer now continues from ``switch.learner``; after a promotion the old
        production learner keeps learning as the fallback during the watch."""
        if switch.action == "promote" and self.watch is not None:
            self.fallback = old_production

    def _announce(self, change: StageChange, figures: dict[str, Any], reason: str) -> None:
        upd = stage_update(
            self.model,
            change.version,
            change.stage,
            change.previous,
            {"action": change.action, "reason": reason, "figures": figures, "by": "rollout"},
        )
        self._outputs.append(Output(self.topics.model_updates, encode(upd), self.model))

    # -- publishing ------------------------------------------------------------------------
    def published(self, mv: ModelVersion, full: bool = True) -> None:
        """The production lineage published ``mv``: its predict-before-learn so far goes
        to it; evaluations of changed versions are written and exported; at a full
        snapshot the candidate arm publishes its state."""
        self.evaluation.set(mv.version, "progressive", self.progressive)
        self.progressive = ScoreTally()
        if self.replayed.count:
            self.evaluation.set(mv.version, "replayed", self.replayed)
            self.replayed = ScoreTally()
        if self.watch is not None and not self.watch.since_version:
            self.watch.since_version = mv.version
        if full and self.challenger is not None and self.challenger.learned:
            self._publish_arm(self.challenger, mv)
        self._write_evaluations()

    def _publish_arm(self, ch: _Challenger, production: ModelVersion) -> None:
        snap = ch.learner.snapshot()
        try:
            idx, val = ch.learner.featuriser.transform_many(self.sample_rows)
            onnx_parity(snap, ch.learner, idx, val)
        except ParityError as exc:
            PARITY_FAILURES.labels(self.model, "candidate").inc()
            self._reject_arm(
                ch, f"ONNX parity of its arm: {exc}", {"max_abs_diff": exc.max_abs_diff}
            )
            return
        mv = self.registry.publish(
            self.model,
            snap,
            {
                "origin": SHADOW,
                "arm_of": ch.root,
                "parent_version": ch.versions[-1],
                "offsets": production.metadata.get("offsets"),
                "examples_learned_online": ch.learned,
            },
            stage=Stage.CANDIDATE,
        )
        self.evaluation.set(mv.version, "progressive", ch.progressive)
        ch.progressive = ScoreTally()
        ch.versions.append(mv.version)
        ch.learned = 0
        upd = ModelUpdate(self.model, mv.version, float(mv.metadata["created_at"]))
        self._outputs.append(Output(self.topics.model_updates, encode(upd), self.model))

    def _write_evaluations(self) -> None:
        now = self._clock()
        for v in self.evaluation.take_changed():
            report = self.evaluation.report(v)
            try:
                self.registry.write_evaluation(
                    self.model,
                    v,
                    {"model": self.model, "version": v, "updated_at": now, "traffic": report},
                )
            except ModelError as exc:
                log.warning("model=%s version=%d: evaluation not written: %s", self.model, v, exc)
            for traffic, r in report.items():
                for metric in _METRICS:
                    value = r.get(metric)
                    if value is not None:
                        VERSION_METRIC.labels(self.model, str(v), traffic, metric).set(value)
            self._exported.add(v)
        newest = sorted(self._exported)[-self.metrics_versions :]
        for v in sorted(self._exported - set(newest)):
            for traffic in TRAFFICS:
                for metric in _METRICS:
                    with contextlib.suppress(KeyError):  # never set
                        VERSION_METRIC.remove(self.model, str(v), traffic, metric)
            self._exported.discard(v)

    def protected(self) -> set[int]:
        """Versions retention must keep: the candidate arm's, and the watch's."""
        out: set[int] = set()
        if self.challenger is not None:
            out.update(self.challenger.versions)
        if self.watch is not None:
            out.update(v for v in (self.watch.promoted, self.watch.fallback_version) if v)
        return out

    def take_outputs(self) -> list[Output]:
        """Announcements (stage changes, arm versions) made since the last call."""
        out, self._outputs = self._outputs, []
        return out

    def history(self) -> dict[int, dict[str, Any]]:
        """The newest decision about each version (for tests and reports)."""
        return decisions(self.registry, self.model)
