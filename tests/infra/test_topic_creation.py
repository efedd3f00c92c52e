"""Services create the topics they use only where they may: in production the operator
makes them (with replication 3); a service that made one itself would use its defaults
(one replica), and min.insync.replicas 2 would then refuse every write."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.admin import NewTopic
from kafka.errors import TopicAuthorizationFailedError

from mint.backends import kafka as kafka_backend
from mint.backends.kafka import KafkaConnection, create_missing_topics
from mint.domain.errors import FailedPrecondition


class NoCreateAcl:
    """An admin client for a principal without the Create permission (a unit stand-in:
    the broker answers TOPIC_AUTHORIZATION_FAILED whether or not the topic exists)."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing

    def create_topics(self, topics: list[NewTopic]) -> None:
        raise TopicAuthorizationFailedError(topics[0].name)

    def list_topics(self) -> list[str]:
        return sorted(self.existing)

    def close(self) -> None:
        pass


def refusing(monkeypatch: pytest.MonkeyPatch, existing: set[str]) -> None:
    def admin(kafka: KafkaConnection, timeout_s: float = 10.0) -> Any:
        return NoCreateAcl(existing)

    monkeypatch.setattr(kafka_backend, "admin", admin)


def test_a_principal_without_create_goes_on_when_the_topics_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusing(monkeypatch, {"mint.residency.desired", "mint.residency.status"})
    topics = [NewTopic(n, 4, 3) for n in ("mint.residency.desired", "mint.residency.status")]
    create_missing_topics(KafkaConnection("unused:9092"), topics)


def test_a_missing_topic_it_may_not_create_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    refusing(monkeypatch, {"mint.residency.desired"})
    topics = [NewTopic(n, 4, 3) for n in ("mint.residency.desired", "mint.residency.demand")]
    with pytest.raises(FailedPrecondition, match=r"mint\.residency\.demand does not exist"):
        create_missing_topics(KafkaConnection("unused:9092"), topics)
