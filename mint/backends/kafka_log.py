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
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, ProducerFencedError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from mint.domain.errors import Unavailable, VersionConflict
from mint.domain.events import Event
from mint.eventlog.port import (
    AppendResult,
    Checkpoint,
    EventLog,
    Metadata,
    Position,
    Recorded,
    build_envelopes,
    next_checkpoint,
)
from mint.v1.events_pb2 import EventEnvelope

from .kafka import create_log_topic, durable_producer

DEFAULT_TOPIC = "mint.adapter-events"


def partition_for(stream_id: str, partitions: int) -> int:
    """Kafka's own key partitioning (murmur2), so any Kafka client agrees on it."""
    return int(murmur2(stream_id.encode()) & 0x7FFFFFFF) % partitions


def _consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )


def _to_recorded(record: object) -> Recorded:
    envelope = EventEnvelope.FromString(record.value)  # type: ignore[attr-defined]
    return Recorded(envelope, Position(record.partition, record.offset))  # type: ignore[attr-defined]


def read_partitions(
    bootstrap: str,
    topic: str,
    start: dict[int, int],
    follow_s: float | None = None,
) -> Iterator[Recorded]:
    """Committed records of `topic` from `start` (partition -> next offset).

    With follow_s None: up to each partition's end as of the call. Otherwise keep
    reading until nothing new has arrived for `follow_s` seconds.
    """
    consumer = _consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        end = consumer.end_offsets(tps) if follow_s is None else {}
        idle_since = time.monotonic()
        while True:
            if follow_s is None and all(consumer.position(tp) >= end[tp] for tp in tps):
                return
            if follow_s is not None and time.monotonic() - idle_since > follow_s:
                return
            batches = consumer.poll(timeout_ms=200)
            for tp in tps:  # keep per-partition order; partitions in a stable order
                for record in batches.get(tp, []):
                    if follow_s is None and record.offset >= end[tp]:
                        continue
                    idle_since = time.monotonic()
                    yield _to_recorded(record)
    finally:
        consumer.close()


class PartitionWriter:
    """The single writer of one partition: fenced producer plus the partition's state."""

    def __init__(self, bootstrap: str, topic: str, partition: int, txn_prefix: str) -> None:
        self.bootstrap, self.topic, self.partition = bootstrap, topic, partition
        self.transactional_id = f"{txn_prefix}-p{partition}"
        self.lock = threading.Lock()
        self.streams: dict[str, list[Recorded]] = {}
        self.requests: dict[tuple[str, str], AppendResult] = {}
        self.producer: KafkaProducer | None = None

    def acquire(self) -> None:
        """Fence earlier owners, then rebuild state from the partition (in that order)."""
        with self.lock:
            self._close_producer()
            producer = durable_producer(self.bootstrap, transactional_id=self.transactional_id)
            producer.init_transactions()
            self.streams, self.requests = {}, {}
            for recorded in read_partitions(self.bootstrap, self.topic, {self.partition: 0}):
                self._observe(recorded)
            self.producer = producer

    def release(self) -> None:
        with self.lock:
            self._close_producer()

    def _close_producer(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=2)
            self.producer = None

    def _observe(self, recorded: Recorded) -> None:
        env = recorded.envelope
        events = self.streams.setdefault(env.stream_id, [])
        events.append(recorded)
        key = (env.stream_id, env.request_id)
        first = self.requests.get(key)
        start = first.first_version if first else env.stream_version
        self.requests[key] = AppendResult(env.stream_id, start, env.stream_version, True)

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        with self.lock:
            if self.producer is None:
                raise Unavailable(f"partition {self.partition} is not owned here; retry")
            if (stream_id, meta.request_id) in self.requests:
                return self.requests[stream_id, meta.request_id]
            stream = self.streams.get(stream_id, [])
            if len(stream) != expected_version:
                raise VersionConflict(
                    f"stream {stream_id} is at version {len(stream)}, not {expected_version}: "
                    "re-read it and retry"
                )
            prev_hash = stream[-1].envelope.hash if stream else b""
            envelopes = build_envelopes(stream_id, expected_version, prev_hash, events, meta)
            offsets = self._commit(stream_id, envelopes)
            for envelope, offset in zip(envelopes, offsets, strict=True):
                self._observe(Recorded(envelope, Position(self.partition, offset)))
            return AppendResult(stream_id, expected_version + 1, expected_version + len(events))

    def _commit(self, stream_id: str, envelopes: list[EventEnvelope]) -> list[int]:
        assert self.producer is not None
        producer = self.producer
        try:
            producer.begin_transaction()
            futures = [
                producer.send(
                    self.topic,
                    key=stream_id.encode(),
                    value=e.SerializeToString(),
                    partition=self.partition,
                    headers=[("event-type", e.event_type.encode())],
                )
                for e in envelopes
            ]
            producer.commit_transaction()
            return [int(f.get(timeout=30).offset) for f in futures]
        except ProducerFencedError as exc:
            self._close_producer()  # another replica owns this partition now
            raise Unavailable(f"partition {self.partition} moved to another writer; retry") from exc
        except KafkaError as exc:
            # Ambiguous: the transaction may or may not have committed. Re-fence and
            # rebuild, so a retry with the same request id finds out which.
            self.lock.release()
            try:
                self.acquire()
            finally:
                self.lock.acquire()
            raise Unavailable(
                f"append to partition {self.partition} failed ({exc}); "
                "retry with the same request id"
            ) from exc


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
            with writer.lock:
                return list(writer.streams.get(stream_id, []))
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
