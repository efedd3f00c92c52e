"""The writer's producers (kafka_writer.py): settings that give up fast, a commit with a
limit, and a close that really stops.

kafka-python's producers wait on a dead broker for as long as their defaults allow
(30 s per request, 60 s to initialise, 120 s to deliver) and on a commit for ever; the
writer would rather drop a producer and start over with a fresh one, which finds the
new coordinator or leader in seconds.
"""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

# After a commit the broker is still writing the markers; the next transaction's first
# request gets CONCURRENT_TRANSACTIONS and retries after this backoff. The client's 100 ms
# default caps a producer near 10 transactions per second.
TXN_RETRY_BACKOFF_MS = 5
COMMIT_TIMEOUT_S = 6.0  # a commit takes milliseconds; longer means a broker is gone
# The writer's producers give up quickly and leave retrying to the writer, which starts
# over with a fresh producer: one that keeps waiting on a dead broker (kafka-python's
# defaults: 30 s per request, 60 s to initialise, 120 s to deliver) holds every write.
WRITER_PRODUCER: dict[str, int] = {
    "retry_backoff_ms": TXN_RETRY_BACKOFF_MS,
    "request_timeout_ms": 5_000,
    "max_block_ms": 3_000,
    "delivery_timeout_ms": 15_000,
    "max_request_size": 16 << 20,  # a stream's snapshot is one record (up to 8 MiB)
}
# A fencer only initialises an id, on that id's coordinator; while the coordinator is
# being moved off a dead broker, short tries (repeated by the retake loop) find the new
# one sooner than a long wait on the old one.
FENCER: dict[str, int] = {**WRITER_PRODUCER, "request_timeout_ms": 2_000, "max_block_ms": 2_000}


def commit_within(producer: KafkaProducer, timeout_s: float) -> None:
    """`commit_transaction()`, bounded: kafka-python's waits without a limit (Java's waits
    `max.block.ms`), and after its coordinator dies it kept waiting for two minutes. This
    is its own body with a timeout on the wait."""
    result = producer._transaction_manager.begin_commit()
    producer._sender.wakeup()
    if not result.wait(timeout_ms=timeout_s * 1000):
        raise KafkaTimeoutError(f"the commit did not finish within {timeout_s:.0f} s")


def close_producer(producer: KafkaProducer, timeout_s: float = 2.0) -> None:
    """Close within `timeout_s`, dropping records it could not send by then."""
    try:
        producer.close(timeout=timeout_s)
    except KafkaError:
        # kafka-python's close raises from its flush before it stops the sender thread,
        # which would go on retrying against the cluster for good: stop it here.
        producer._sender.force_close()
