"""One round trip through each real server; used on the shared stack and on stopped ones."""

from __future__ import annotations

import io
import uuid

from kafka import KafkaConsumer

from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.s3 import S3Settings, client


def kafka_round_trip(
    kafka: KafkaConnection, records: int = 20, timeout_s: float = 10.0
) -> list[bytes]:
    """Create a log topic, produce `records` durably, consume them back in order."""
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    create_log_topic(kafka, topic, partitions=1, replication=1, timeout_s=timeout_s)
    producer = durable_producer(kafka, max_block_ms=int(timeout_s * 1000))
    try:
        for i in range(records):
            producer.send(topic, key=b"k", value=f"v{i}".encode()).get(timeout=timeout_s)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        **kafka.options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return [message.value for _, message in zip(range(records), consumer, strict=False)]
    finally:
        consumer.close()


def s3_round_trip(settings: S3Settings, timeout_s: float = 10.0) -> bytes:
    """Create a bucket, put an object, read it back. The first write to a fresh server
    also creates its first volume, which can take seconds on a busy machine."""
    s3 = client(settings, timeout_s=timeout_s, retries=0)
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    s3.put_object(bucket, "hello.txt", io.BytesIO(b"hello"), 5)
    response = s3.get_object(bucket, "hello.txt")
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
