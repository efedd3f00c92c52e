"""The real Kafka broker behaves as MinT's event log relies on."""

from __future__ import annotations

import logging
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from mint.backends.kafka import (
    KafkaConnection,
    admin,
    broker_ids,
    create_log_topic,
    durable_producer,
    subscribe_known,
)
from tests.infra.smoke import kafka_round_trip


def test_round_trip_in_order(kafka: KafkaConnection) -> None:
    assert kafka_round_trip(kafka, records=20) == [f"v{i}".encode() for i in range(20)]


def test_log_topic_keeps_records_forever(kafka: KafkaConnection, unique: str) -> None:
    create_log_topic(kafka, unique, partitions=3, replication=1)
    client = admin(kafka)
    try:
        result = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, unique)])
    finally:
        client.close()
    configs = result["topic"][unique]
    assert configs["retention.ms"]["value"] == "-1"
    assert configs["retention.bytes"]["value"] == "-1"


def test_durable_producer_acks_all_idempotent_with_headers(
    kafka: KafkaConnection, unique: str
) -> None:
    create_log_topic(kafka, unique, partitions=1, replication=1)
    producer = durable_producer(kafka)
    assert producer.config["acks"] == -1  # "all"
    assert producer.config["enable_idempotence"] is True
    offsets = [
        producer.send(unique, key=b"a", value=bytes([i]), headers=[("event-id", b"e%d" % i)])
        .get(timeout=10)
        .offset
        for i in range(10)
    ]
    producer.close()
    assert offsets == list(range(10))
    consumer = KafkaConsumer(
        unique,
        **kafka.options(),
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    got = [(m.offset, m.value, dict(m.headers)) for _, m in zip(range(10), consumer, strict=False)]
    consumer.close()
    assert got == [(i, bytes([i]), {"event-id": b"e%d" % i}) for i in range(10)]


def _transactional(kafka: KafkaConnection, txn_id: str) -> KafkaProducer:
    producer = durable_producer(kafka, transactional_id=txn_id)
    producer.init_transactions()
    return producer


def _committed_values(kafka: KafkaConnection, topic: str, expect: int) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        **kafka.options(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=5_000,
    )
    values = [m.value for _, m in zip(range(expect + 1), consumer, strict=False)]
    consumer.close()
    return values


def test_aborted_transaction_is_invisible_to_read_committed(
    kafka: KafkaConnection, unique: str
) -> None:
    create_log_topic(kafka, unique, partitions=1, replication=1)
    producer = _transactional(kafka, f"{unique}-writer")
    producer.begin_transaction()
    producer.send(unique, value=b"kept")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(unique, value=b"dropped")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(unique, value=b"kept too")
    producer.commit_transaction()
    producer.close()
    assert _committed_values(kafka, unique, expect=2) == [b"kept", b"kept too"]


def test_new_owner_of_transactional_id_fences_the_old_one(
    kafka: KafkaConnection, unique: str
) -> None:
    """KIP-98 zombie fencing: the basis of MinT's single writer per partition."""
    create_log_topic(kafka, unique, partitions=1, replication=1)
    old = _transactional(kafka, f"{unique}-p0")
    old.begin_transaction()
    old.send(unique, value=b"from the zombie").get(timeout=10)
    new = _transactional(kafka, f"{unique}-p0")  # aborts old's open transaction
    with pytest.raises(KafkaError):
        old.commit_transaction()
    new.begin_transaction()
    new.send(unique, value=b"from the owner")
    new.commit_transaction()
    new.close()
    old.close(timeout=1)
    assert _committed_values(kafka, unique, expect=1) == [b"from the owner"]


def test_metadata_round_trip_lists_the_broker(kafka: KafkaConnection) -> None:
    assert broker_ids(kafka) == {1}


def test_a_member_that_knows_the_topic_is_given_it_at_the_first_join(
    kafka: KafkaConnection, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A group leader joining before its metadata holds the topic assigns nothing ("No
    partition metadata"), and the rejoin that then follows can be lost (kafka-python
    3.0.12): a trainer or evaluator would read nothing. `subscribe_known` fetches the
    topic's metadata first, so the first join assigns every partition."""
    create_log_topic(kafka, unique, partitions=3, replication=1)
    consumer = KafkaConsumer(**kafka.options(), group_id=unique, enable_auto_commit=False)
    try:
        with caplog.at_level(logging.WARNING, logger="kafka"):
            subscribe_known(consumer, unique)
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
        assigned = {tp.partition for tp in consumer.assignment()}
    finally:
        consumer.close()
    assert "No partition metadata" not in caplog.text
    assert assigned == {0, 1, 2}
