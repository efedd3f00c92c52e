"""The checkpoint topic: `<events topic>.checkpoints`, signed checkpoints of the event
topic (mint/eventlog/checkpoints.py), partition p's in partition p.

Kept forever like the events (a deleted checkpoint is a hole the verifier reports).
Written by an idempotent producer outside the writer's transactions: a checkpoint
vouches only for events already committed, so it needs no fencing (two replicas handing a
partition over may both write one, both true).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from mint.domain.errors import Unavailable

from .kafka import (
    CREATED_TOPIC_WAIT_S,
    KafkaConnection,
    create_log_topic,
    durable_producer,
    topic_partitions,
)
from .kafka_reader import read_records

SEND_TIMEOUT_S = 15.0


def checkpoint_topic(events_topic: str) -> str:
    return f"{events_topic}.checkpoints"


class KafkaCheckpointStore:
    def __init__(
        self,
        kafka: KafkaConnection,
        events_topic: str,
        partitions: int,
        replication: int = 1,
        create: bool = True,
    ) -> None:
        """The store of `events_topic`'s checkpoints; `create` makes its topic if missing
        (a verifier reads only, and finds no checkpoints if there is no topic)."""
        self.kafka, self.topic, self.partitions = kafka, checkpoint_topic(events_topic), partitions
        if create:
            create_log_topic(kafka, self.topic, partitions, replication)
            actual = topic_partitions(kafka, self.topic, CREATED_TOPIC_WAIT_S)
            if actual != partitions:  # partition p's checkpoints go to partition p
                raise ValueError(
                    f"topic {self.topic} has {actual} partitions, not {partitions}: give it "
                    "as many as the events topic"
                )
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def append(self, partition: int, signed: bytes) -> None:
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = durable_producer(self.kafka)
                producer = self._producer
            future = producer.send(self.topic, value=signed, partition=partition)
            future.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:
            what = type(exc).__name__
            raise Unavailable(f"could not store a checkpoint ({what}); retry") from exc

    def last(self, partition: int) -> bytes | None:
        tp = TopicPartition(self.topic, partition)
        consumer = KafkaConsumer(**self.kafka.options(), enable_auto_commit=False, group_id=None)
        try:
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            if end == 0:
                return None
            consumer.seek(tp, end - 1)  # no transactions here: the last offset is a record
            deadline = time.monotonic() + SEND_TIMEOUT_S
            while time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=500).get(tp, []):
                    if record.offset == end - 1:
                        return bytes(record.value)
            raise Unavailable(f"the last checkpoint of partition {partition} did not come; retry")
        except KafkaError as exc:
            raise Unavailable(f"could not read the last checkpoint ({exc}); retry") from exc
        finally:
            consumer.close()

    def read_all(self) -> Iterator[tuple[int, str, bytes]]:
        try:
            topic_partitions(self.kafka, self.topic)
        except ValueError:  # no topic: nothing was ever signed (or it was deleted)
            return
        start = dict.fromkeys(range(self.partitions), 0)
        try:
            for record in read_records(self.kafka, self.topic, start):
                where = f"{self.topic} partition {record.partition} offset {record.offset}"
                yield record.partition, where, bytes(record.value)
        except KafkaError as exc:
            raise Unavailable(f"could not read the checkpoints ({exc}); retry") from exc

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
