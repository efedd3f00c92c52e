"""The responses topic: what nodes served, keyed by response id, kept for a retention.

Nodes append a record per reply on a thread of their own, after the reply is made: the
caller never waits for it, and a record that cannot be sent is dropped and counted, not
retried for ever (the output was served; the record is an audit aid, not the source of
truth). The audit finds a record by its id: the id says when it was made (a UUIDv7), so
the reader seeks by time in the one partition the key hashes to instead of reading the
topic whole.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from mint.domain.errors import Unavailable

from .kafka import KafkaConnection, create_missing_topics, durable_producer, wait_for_partitions

log = logging.getLogger(__name__)
WEEK_MS = 7 * 24 * 3600 * 1000
# A record's timestamp is taken when it is sent, after its id was made on the same node;
# the margin covers a clock stepped back in between.
CLOCK_MARGIN_MS = 60_000
PENDING = 10_000  # records waiting to be sent; past that new ones are dropped


@dataclass(frozen=True)
class ResponsesTopic:
    name: str = "mint.responses"
    retention_ms: int = WEEK_MS
    partitions: int = 4

    def create(self, kafka: KafkaConnection, replication: int = 1) -> None:
        """Create the topic if missing (idempotent), with its retention."""
        configs = {"retention.ms": str(self.retention_ms)}
        if replication >= 3:
            configs["min.insync.replicas"] = "2"
        create_missing_topics(
            kafka, [NewTopic(self.name, self.partitions, replication, topic_configs=configs)]
        )
        wait_for_partitions(kafka, self.name)


class ResponseRecorder:
    """Sends records to the topic from a thread of its own; `record` never blocks."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        on_drop: Callable[[], None] | None = None,
        pending: int = PENDING,
    ) -> None:
        self.topic, self.on_drop = topic, on_drop
        # Batched (linger) and bounded: a broker that is away costs dropped records, and
        # never a request's time.
        self._producer: KafkaProducer = durable_producer(kafka, linger_ms=20, max_block_ms=5000)
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(pending)
        self._thread = threading.Thread(target=self._run, name="responses", daemon=True)
        self._thread.start()

    def record(self, response_id: str, value: bytes) -> None:
        try:
            self._queue.put_nowait((response_id, value))
        except queue.Full:
            self._dropped(f"{self._queue.maxsize} records are waiting to be sent")

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every record recorded so far was handed to Kafka and acknowledged."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._producer.close(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            key, value = item
            try:
                future = self._producer.send(self.topic, key=key.encode(), value=value)
                future.add_errback(lambda exc, key=key: self._dropped(f"{key}: {exc}"))
            except KafkaError as exc:
                self._dropped(f"{key}: {exc}")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _dropped(self, why: str) -> None:
        log.warning("a response record was not written: %s", why)
        if self.on_drop is not None:
            self.on_drop()


def find_response(
    kafka: KafkaConnection, topic: str, response_id: str, made_ms: int, wait_s: float = 0.0
) -> bytes | None:
    """The record of `response_id` (made at `made_ms`), or None if the topic has none. A
    record not there yet is waited for up to `wait_s` (nodes send them after replying)."""
    consumer = KafkaConsumer(
        **kafka.options(),
        enable_auto_commit=False,
        group_id=None,
        allow_auto_create_topics=False,  # a mistyped topic is an error, not a new topic
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise Unavailable(f"the responses topic {topic} does not exist or cannot be read")
        key = response_id.encode()
        tp = TopicPartition(topic, int(murmur2(key) & 0x7FFFFFFF) % len(partitions))
        consumer.assign([tp])
        found = consumer.offsets_for_times({tp: max(0, made_ms - CLOCK_MARGIN_MS)})[tp]
        if found is None:  # nothing at or after that time yet
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found.offset)
        return _scan(consumer, tp, key, time.monotonic() + wait_s)
    finally:
        consumer.close()


def _scan(consumer: Any, tp: TopicPartition, key: bytes, until: float) -> bytes | None:
    while True:
        end = consumer.end_offsets([tp])[tp]
        while consumer.position(tp) < end:
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                if record.key == key:
                    return bytes(record.value)
        if time.monotonic() >= until:
            return None
        time.sleep(0.1)
