"""Asking the prediction service for scores over HTTP (design.md §4 contract)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import httpx

from streams.contracts import PredictionReply, PredictionRequest, decode, encode
from streams.errors import ContractError

log = logging.getLogger(__name__)

_HEADERS = {"content-type": "application/json"}
#: Every outcome of a predict call (``streamlearn_simulator_requests_total{outcome}``).
OUTCOMES: Final = ("served", "unavailable", "timeout", "http_error", "bad_reply")


@dataclass(frozen=True)
class Scored:
    """The result of one predict call.

    ``outcome`` is ``served`` (``scores`` set), ``unavailable`` (no connection, or 503),
    ``timeout``, ``http_error`` (any other non-200) or ``bad_reply`` (a 200 whose body
    breaks the contract or has the wrong number of scores). ``latency_s`` is the round
    trip of a served call (failed calls are counted by outcome, not timed, so start-up
    503s do not flatter the percentiles).
    """

    outcome: str
    scores: list[float] | None = None
    latency_s: float | None = None


class ScoringClient:
    """POSTs prediction requests to ``{serving_url}/v1/models/{model}:predict``.

    One keep-alive ``httpx.Client``; failures never raise, they come back as an outcome,
    and a change of outcome is logged once (not once per request).
    """

    def __init__(self, serving_url: str, model: str, timeout_s: float = 1.0) -> None:
        self.url = f"{serving_url.rstrip('/')}/v1/models/{model}:predict"
        self._client = httpx.Client(timeout=timeout_s)
        self._last_outcome = "served"

    def score(self, request: PredictionRequest) -> Scored:
        """Scores for ``request.candidates``, in order, or the reason there are none."""
        started = time.perf_counter()
        try:
            resp = self._client.post(self.url, content=encode(request), headers=_HEADERS)
        except httpx.TimeoutException as exc:
            return self._note(Scored("timeout"), repr(exc))
        except httpx.TransportError as exc:
            return self._note(Scored("unavailable"), repr(exc))
        latency = time.perf_counter() - started
        if resp.status_code != 200:
            outcome = "unavailable" if resp.status_code == 503 else "http_error"
            return self._note(Scored(outcome), f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            reply = decode(PredictionReply, resp.content)
        except ContractError as exc:
            return self._note(Scored("bad_reply"), str(exc))
        if len(reply.scores) != len(request.candidates):
            return self._note(
                Scored("bad_reply"),
                f"expected {len(request.candidates)} scores, got {len(reply.scores)}",
            )
        return self._note(Scored("served", reply.scores, latency), f"model version {reply.version}")

    def _note(self, scored: Scored, detail: str) -> Scored:
        if scored.outcome != self._last_outcome:
            level = logging.INFO if scored.outcome == "served" else logging.WARNING
            log.log(level, "serving at %s: %s (%s)", self.url, scored.outcome, detail)
            self._last_outcome = scored.outcome
        return scored

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
