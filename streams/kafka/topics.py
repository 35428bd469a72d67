"""Every topic streamlearn uses, with its prefix, and creating them up front."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamlearn.streams.errors import KafkaError
from streamlearn.streams.kafka.config import KafkaConfig

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (``KafkaConfig.topic_prefix``)."""

    prefix: str = "streamlearn."

    @property
    def activity(self) -> str:
        """User activity events (key = user_id)."""
        return f"{self.prefix}activity"

    @property
    def prediction_requests(self) -> str:
        """Prediction requests for services that ask over Kafka (key = user_id)."""
        return f"{self.prefix}prediction-requests"

    @property
    def predictions(self) -> str:
        """Prediction replies, for requests that came over HTTP or the request topic."""
        return f"{self.prefix}predictions"

    @property
    def features(self) -> str:
        """Feature records (key ``user/<id>`` or ``item/<id>``): the feature store's changelog.

        A user's record is complete; an item's record is the partial aggregate of the
        partition it is on (see ``streamlearn.streams.features.store.merge_partials``)."""
        return f"{self.prefix}features"

    @property
    def joiner_changelog(self) -> str:
        """Changelog of the joiner's open label windows."""
        return f"{self.prefix}joiner.changelog"

    @property
    def feature_log(self) -> str:
        """Features exactly as served, one record per request (key = user_id)."""
        return f"{self.prefix}feature-log"

    def training_examples(self, model: str) -> str:
        """Labelled examples for ``model`` (key = user_id)."""
        return f"{self.prefix}training-examples.{model}"

    @property
    def model_updates(self) -> str:
        """Announcements of newly published model versions and stage changes (1 partition)."""
        return f"{self.prefix}model-updates"

    @staticmethod
    def dlq(topic: str) -> str:
        """The dead-letter topic of ``topic``."""
        return topic + DLQ_SUFFIX

    def loop_topics(self, models: tuple[str, ...]) -> list[str]:
        """All partitioned topics of the online loop, dead-letter topics included, with the
        training examples of ``models`` (a project's)."""
        models = tuple(dict.fromkeys(models))
        main = [
            self.activity,
            self.prediction_requests,
            self.predictions,
            self.features,
            self.feature_log,
            self.joiner_changelog,
            *(self.training_examples(m) for m in models),
        ]
        return main + [self.dlq(t) for t in main]


#: Topic settings of state changelogs: only the newest record of each key is needed to
#: rebuild a store. Apache Kafka compacts them; the embedded broker records the setting
#: and never compacts (a restore there reads a partition's whole history).
CHANGELOG_CONFIG: Final = {"cleanup.policy": "compact"}


def ensure_topics(
    config: KafkaConfig,
    names: list[str],
    partitions: int | None = None,
    timeout_s: float = 15.0,
    topic_config: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet, with an explicit partition count (and
    ``topic_config``, e.g. ``CHANGELOG_CONFIG``).

    Existing topics are left alone (a partition-count mismatch is logged, since
    co-partitioned topics must agree).
    """
    admin = AdminClient(config.admin_conf(), logger=logging.getLogger("librdkafka"))
    want = partitions or config.partitions
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaError(f"cannot list topics at {config.bootstrap_servers}: {exc}") from exc
    for name in names:
        if name in existing and len(existing[name].partitions) != want:
            log.warning(
                "topic=%s has %d partitions, expected %d",
                name,
                len(existing[name].partitions),
                want,
            )
    new = [
        NewTopic(
            n,
            num_partitions=want,
            replication_factor=config.replication_factor,
            config=dict(topic_config or {}),
        )
        for n in dict.fromkeys(names)
        if n not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise KafkaError(f"cannot create topic={name}: {exc}") from exc
        log.info("created topic=%s partitions=%d", name, want)


def ensure_loop_topics(config: KafkaConfig, topics: Topics, models: tuple[str, ...]) -> None:
    """Create every topic of the online loop for a project's ``models``: partitioned ones
    (the stores' changelogs compacted) and the 1-partition model-updates topic (its order
    is the order of versions)."""
    changelogs = [topics.features, topics.joiner_changelog]
    ensure_topics(config, changelogs, topic_config=CHANGELOG_CONFIG)
    ensure_topics(config, [t for t in topics.loop_topics(models) if t not in changelogs])
    ensure_topics(config, [topics.model_updates], partitions=1)
