"""The exceptions of ``streams``: one root under :class:`streamlearn.models.errors.StreamlearnError`
(whose docstring draws the whole tree, with each class's HTTP status and exit code)."""

from __future__ import annotations

from streamlearn.models.errors import StreamlearnError


class StreamsError(StreamlearnError):
    """Root of every error raised by the ``streams`` package."""


class BrokerError(StreamsError):
    """The embedded broker could not be started, or did not answer in time."""

    status = 503


class KafkaError(StreamsError):
    """A Kafka client operation failed (topic creation, produce, commit)."""

    status = 503


class ContractError(StreamsError):
    """A record does not match its contract.

    ``reason`` is a short machine-readable code (``bad_json``, ``missing_field``,
    ``wrong_type``, ``unknown_type``, ``oversize``, ``invalid_value``) used in the
    dead-letter headers and as a metric label; the message says what was expected and got.
    """

    status = 400
    exit_code = 2

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CatalogError(StreamsError):
    """A project's declaration (event type, surface, entity, field, feature, head, model)
    cannot be built: a duplicate name, an unknown reference, a bad value."""

    exit_code = 2


class StateLost(StreamsError):
    """A processor's in-memory state is undefined (e.g. a learner failed half-way through
    an update). The runtime stops without committing anything more, so a restart resumes
    from the last checkpoint; retrying record by record would apply records twice."""


class RankLost(StateLost):
    """A trainer rank died or stopped answering within the rank time-out during a sync
    round (``streamlearn.streams.learning.ranks``): every rank stops uncommitted and
    resumes from the last cut."""


class Fenced(StreamsError):
    """This worker's group membership was revoked while it was not responding (frozen
    past its session time-out): its partitions belong to another worker now. It stops
    without committing anything more; a restart rejoins the group."""
