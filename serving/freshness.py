"""Freshness as this server sees it: observed when a model version is swapped in.

On each swap the versions whose positives this server now serves for the first time
(``streamlearn.models.freshness.newly_served``: above the last version counted, up to the swapped
one, same lineage) are read from the registry and every sampled positive's freshness is
observed in ``streamlearn_freshness_seconds`` and, per stage, in
``streamlearn_freshness_stage_seconds``. The first load of a model (start-up) sets the
starting point and counts nothing: nothing was being served before it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from streamlearn.models.errors import ModelError
from streamlearn.models.freshness import STAGES, Freshness, measure, newly_served
from streamlearn.models.registry import FileRegistry, ModelVersion
from streamlearn.serving.metrics import FRESHNESS, FRESHNESS_STAGE

log = logging.getLogger(__name__)

#: At most this many versions below a swapped one are read for one swap.
MAX_VERSIONS_PER_SWAP: Final = 1000


class FreshnessTracker:
    """Per model: the lineage and the highest version counted so far."""

    def __init__(self, registry: FileRegistry) -> None:
        self.registry = registry
        self._counted: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def swapped(self, mv: ModelVersion, swapped_at: float) -> list[Freshness]:
        """Observe the freshness of what ``mv`` (swapped in at ``swapped_at``) serves
        first; returns the observations."""
        lineage = mv.metadata.get("lineage_id")
        with self._lock:
            before = self._counted.get(mv.model)
            if before is None or lineage is None:
                self._counted[mv.model] = (lineage, mv.version)
                return []
            same = before[0] == lineage
            if same and mv.version <= before[1]:
                return []  # a rollback: nothing new is served
            served_before = before[1] if same else None
            self._counted[mv.model] = (lineage, mv.version)
        low = mv.version - 1 if served_before is None else served_before
        low = max(low, mv.version - MAX_VERSIONS_PER_SWAP)
        metas = [mv.metadata]
        for v in range(low + 1, mv.version):
            try:
                metas.append(self.registry.get(mv.model, v).metadata)
            except ModelError:
                continue  # pruned by retention, or never complete
        try:
            out = measure(newly_served(metas, served_before, mv.metadata), swapped_at)
        except (KeyError, TypeError, ValueError) as exc:  # metadata from elsewhere
            log.warning("model=%s version=%d: no freshness: %r", mv.model, mv.version, exc)
            return []
        hist = FRESHNESS.labels(mv.model)
        stages = {s: FRESHNESS_STAGE.labels(mv.model, s) for s in STAGES}
        for f in out:
            hist.observe(f.total)
            for name, value in f.stages().items():
                stages[name].observe(value)
        return out
