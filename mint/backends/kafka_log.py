"""The event log on Kafka: one topic, records keyed by stream id, a single writer per
partition.

Kafka has no conditional append, so the checks happen in the one process that owns a
partition. Owning partition p means, in this order (KIP-98 zombie fencing):
  1. `init_transactions()` with the transactional id for p, which fences any previous
     owner and aborts its open transaction;
  2. reading p to its end with `read_committed`, rebuilding every stream's version, last
     hash and request ids;
  3. only then accepting commands, each appended in its own transaction.
A replica asked to append to a partition it does not own raises `Unavailable` (retryable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from mint.domain.errors import Unavailable
from mint.domain.events import Event
from mint.eventlog.port import (
    AppendResult,
    Checkpoint,
    EventLog,
    Metadata,
    Recorded,
    next_checkpoint,
)

from .kafka import create_log_topic, topic_partitions
from .kafka_reader import read_partitions
from .kafka_writer import PartitionWriter

DEFAULT_TOPIC = "mint.adapter-events"
STATE_WAIT_S = 10.0


def partition_for(stream_id: str, partitions: int) -> int:
    """Kafka's own key partitioning (murmur2), so any Kafka client agrees on it."""
    return int(murmur2(stream_id.encode()) & 0x7FFFFFFF) % partitions


class KafkaEventLog(EventLog):
    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        partitions: int = 6,
        replication: int = 1,
        txn_prefix: str = "mint-registry",
        owned: Iterable[int] | None = None,
    ) -> None:
        """Open the log; own `owned` partitions (default: all) as their single writer.

        Use owned=() for a read-only client, and `take`/`give_up` when a consumer group
        hands partitions to this replica.
        """
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.txn_prefix = txn_prefix
        with contextlib.suppress(TopicAlreadyExistsError):
            create_log_topic(bootstrap, topic, partitions, replication)
        actual = topic_partitions(bootstrap, topic)
        if actual != partitions:
            # Streams are placed by hashing over the partition count: two counts would
            # give one stream two single writers.
            raise ValueError(
                f"topic {topic} has {actual} partitions, not {partitions}: "
                "configure every replica and reader with the topic's count"
            )
        self.writers: dict[int, PartitionWriter] = {}
        for p in range(partitions) if owned is None else owned:
            self.take(p)

    def take(self, partition: int) -> None:
        writer = PartitionWriter(self.bootstrap, self.topic, partition, self.txn_prefix)
        writer.acquire()
        self.writers[partition] = writer

    def give_up(self, partition: int) -> None:
        writer = self.writers.pop(partition, None)
        if writer is not None:
            writer.release()

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        partition = partition_for(stream_id, self.partitions)
        writer = self.writers.get(partition)
        if writer is None:
            raise Unavailable(f"this replica does not own partition {partition}; retry elsewhere")
        return writer.append(stream_id, expected_version, events, meta)

    def read_stream(self, stream_id: str) -> list[Recorded]:
        partition = partition_for(stream_id, self.partitions)
        writer = self.writers.get(partition)
        if writer is not None and writer.producer is not None:
            # The writer's state is current; wait for it only briefly (it may be
            # committing or rebuilding), then let the caller retry.
            if not writer.lock.acquire(timeout=STATE_WAIT_S):
                raise Unavailable(f"partition {partition} is busy rebuilding; retry")
            try:
                if writer.producer is not None:
                    return list(writer.streams.get(stream_id, []))
            finally:
                writer.lock.release()
        records = read_partitions(self.bootstrap, self.topic, {partition: 0})
        return [r for r in records if r.envelope.stream_id == stream_id]

    def read_all(self, after: Checkpoint | None = None) -> Iterator[Recorded]:
        return read_partitions(self.bootstrap, self.topic, self._start(after))

    def subscribe(self, after: Checkpoint | None, idle_timeout_s: float) -> Iterator[Recorded]:
        return read_partitions(self.bootstrap, self.topic, self._start(after), idle_timeout_s)

    def _start(self, after: Checkpoint | None) -> dict[int, int]:
        return {p: (after or {}).get(p, 0) for p in range(self.partitions)}

    def close(self) -> None:
        for partition in list(self.writers):
            self.give_up(partition)


__all__ = ["DEFAULT_TOPIC", "KafkaEventLog", "next_checkpoint", "partition_for"]
