"""Kafka client settings and checks shared by every MinT component that talks to Kafka."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from mint import logs
from mint.domain.errors import FailedPrecondition, Unavailable

# Every event is durable before it is acknowledged: all in-sync replicas, idempotent
# producer (no duplicates from the producer's own retries).
DURABLE_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "retries": 5,
    "linger_ms": 0,
}

# Topics of the event log are never deleted by time or size.
LOG_TOPIC_CONFIGS: dict[str, str] = {"retention.ms": "-1", "retention.bytes": "-1"}
# Tables: the latest value per key is the state.
COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}


@dataclass(frozen=True)
class KafkaConnection:
    """Which brokers, and how to reach them: every Kafka client MinT builds gets
    `options()`. `KafkaConnection("host:9092")` is a plaintext connection."""

    bootstrap: str  # host:port[,host:port...]
    security_protocol: str = "PLAINTEXT"  # or SSL, SASL_PLAINTEXT, SASL_SSL
    ssl_cafile: str | None = None  # the CA that signed the brokers' certificates
    ssl_certfile: str | None = None  # this client's certificate (mutual TLS)
    ssl_keyfile: str | None = None
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)

    def options(self) -> dict[str, Any]:
        """kafka-python's keyword arguments for these brokers (its names)."""
        security = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
        }
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
            **{name: value for name, value in security.items() if value is not None},
        }


def admin(kafka: KafkaConnection, timeout_s: float = 10.0) -> KafkaAdminClient:
    return KafkaAdminClient(
        **kafka.options(),
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        client_id="mint-admin",
    )


def broker_ids(kafka: KafkaConnection, timeout_s: float = 10.0) -> set[int]:
    """Node ids of the brokers in the cluster: a metadata round trip. Raises if unreachable."""
    client = admin(kafka, timeout_s)
    try:
        cluster = client.describe_cluster()
        return {int(b["broker_id"]) for b in cluster["brokers"] if not b.get("is_fenced")}
    finally:
        client.close()


def check_reachable(kafka: KafkaConnection, timeout_s: float) -> None:
    """Raise Unavailable unless the brokers answer a metadata request within `timeout_s`
    (kafka-python's line per failed attempt is kept quiet: the error says it once)."""
    try:
        with logs.silenced("kafka"):
            broker_ids(kafka, timeout_s)
    except (KafkaError, OSError) as exc:
        raise Unavailable(f"Kafka at {kafka.bootstrap} did not answer: {exc}") from exc


def durable_producer(kafka: KafkaConnection, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**kafka.options(), **{**DURABLE_PRODUCER, **overrides})


def create_missing_topics(
    kafka: KafkaConnection, topics: Sequence[NewTopic], timeout_s: float = 10.0
) -> None:
    """Create each of `topics` that does not exist yet. A principal that may not create
    topics (production: the operator makes them, with the replication it wants) goes on
    if they exist, and is told to create them first if not, rather than a service making
    them with its own defaults."""
    client = admin(kafka, timeout_s)
    try:
        for topic in topics:
            try:
                client.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
            except TopicAuthorizationFailedError as exc:
                if topic.name not in client.list_topics():
                    raise FailedPrecondition(
                        f"topic {topic.name} does not exist and this principal may not "
                        "create it: create it first (on Kubernetes, its KafkaTopic)"
                    ) from exc
    finally:
        client.close()


def create_log_topic(
    kafka: KafkaConnection,
    name: str,
    partitions: int,
    replication: int,
    timeout_s: float = 10.0,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create a topic with the event-log configs (infinite retention) plus `configs`,
    unless it exists."""
    configs = {**LOG_TOPIC_CONFIGS, **(configs or {})}
    if replication >= 3:  # acks=all then means "on at least two brokers"
        configs = {"min.insync.replicas": "2", **configs}
    topic = NewTopic(name, partitions, replication, topic_configs=configs)
    create_missing_topics(kafka, [topic], timeout_s)


def wait_for_partitions(kafka: KafkaConnection, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """The topic's partitions as described once every one has a leader: a topic just
    created is not in every broker's metadata at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = admin(kafka)
        try:
            described = client.describe_topics([topic])
        finally:
            client.close()
        partitions = described[0].get("partitions", []) if described else []
        ready = not described[0].get("error_code") if described else False
        if ready and partitions and all(p.get("leader_id", -1) >= 0 for p in partitions):
            return list(partitions)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"topic {topic} has no leader for every partition after {timeout_s} s"
            )
        time.sleep(0.1)


CREATED_TOPIC_WAIT_S = 10.0  # for a topic just created to show in the metadata


def topic_partitions(kafka: KafkaConnection, topic: str, wait_s: float = 0.0) -> int:
    """How many partitions `topic` has (raises if it does not exist). A topic created a
    moment ago may not be in every broker's metadata yet: `wait_s` waits for it."""
    deadline = time.monotonic() + wait_s
    client = admin(kafka)
    try:
        while True:
            described = client.describe_topics([topic])
            found = described[0] if described else {}
            if found and not found.get("error_code") and found.get("partitions"):
                return len(found["partitions"])
            if time.monotonic() >= deadline:
                raise ValueError(f"topic {topic} does not exist")
            time.sleep(0.2)
    finally:
        client.close()


def subscribe_known(
    consumer: KafkaConsumer,
    topic: str,
    listener: ConsumerRebalanceListener | None = None,
    wait_s: float = CREATED_TOPIC_WAIT_S,
) -> None:
    """Subscribe `consumer` to `topic` once its metadata holds the topic (or after `wait_s`,
    for a topic not created yet). kafka-python (3.0.12) joins the group at the first poll
    with the metadata it has: a leader that lacks the topic's assigns nothing, and the
    rejoin the metadata asks for when it comes can be lost (see kafka_ownership), which
    leaves the group's partitions with no reader until the next rebalance."""
    deadline = time.monotonic() + wait_s
    while not consumer.partitions_for_topic(topic) and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer.subscribe([topic], listener=listener)
