"""Kafka client settings and checks shared by every MinT component that talks to Kafka."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

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


def admin(bootstrap: str, timeout_s: float = 10.0) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        client_id="mint-admin",
    )


def broker_ids(bootstrap: str, timeout_s: float = 10.0) -> set[int]:
    """Node ids of the brokers in the cluster: a metadata round trip. Raises if unreachable."""
    client = admin(bootstrap, timeout_s)
    try:
        cluster = client.describe_cluster()
        return {int(b["broker_id"]) for b in cluster["brokers"] if not b.get("is_fenced")}
    finally:
        client.close()


def durable_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, **{**DURABLE_PRODUCER, **overrides})


def create_log_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    replication: int,
    timeout_s: float = 10.0,
    **configs: str,
) -> None:
    """Create a topic with the event-log configs (infinite retention) plus `configs`."""
    if replication >= 3:  # acks=all then means "on at least two brokers"
        configs = {"min.insync.replicas": "2", **configs}
    client = admin(bootstrap, timeout_s)
    try:
        topic = NewTopic(
            name, partitions, replication, topic_configs={**LOG_TOPIC_CONFIGS, **configs}
        )
        client.create_topics([topic])
    finally:
        client.close()


def wait_for_partitions(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """The topic's partitions as described once every one has a leader: a topic just
    created is not in every broker's metadata at once."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = admin(bootstrap)
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


def topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions `topic` has (raises if it does not exist)."""
    client = admin(bootstrap)
    try:
        described = client.describe_topics([topic])
    finally:
        client.close()
    if not described or described[0].get("error_code"):
        raise ValueError(f"topic {topic} does not exist")
    return len(described[0]["partitions"])
