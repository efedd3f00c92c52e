"""The event log on Kafka: one topic, records keyed by stream id, a single writer per
partition.

Kafka has no conditional append, so the checks happen in the one process that owns a
partition. Owning partition p means, in this order (KIP-98 zombie fencing):
  1. fencing every earlier writer of p (`init_transactions()` with its transactional id
     aborts its open transaction and makes its later writes fail), unless it said it gave
     p up under its current claim;
  2. loading p's snapshots (kafka_snapshots.py) and reading the events after them, or
     reading p from the start where they do not hold;
  3. only then accepting commands, appended in transactions shared by concurrent
     commands (kafka_writer.py), each with its streams' new snapshots.
Owned statically (every partition, one fixed transactional id: a second instance fences
the first) or as a consumer group assigns them (kafka_ownership.py: each partition's
writer is claimed in the group, and the next owner fences the claimed id unless that
claim was released).
A replica asked to append to a partition it does not own raises `Unavailable` (retryable),
and so does every call that meets a Kafka failure: callers never see kafka-python's types.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from mint.deadlines import time_left
from mint.domain.errors import Unavailable
from mint.domain.events import Event
from mint.eventlog.port import (
    AppendResult,
    Checkpoint,
    EventLog,
    Metadata,
    OnForeign,
    Recorded,
    StreamState,
    next_checkpoint,
)
from mint.eventlog.snapshots import located_after, stream_state

from .kafka import CREATED_TOPIC_WAIT_S, KafkaConnection, create_log_topic, topic_partitions
from .kafka_claims import Claims, NotHeld
from .kafka_reader import read_located, read_partitions
from .kafka_snapshots import create_snapshot_topic
from .kafka_writer import LogWriter

DEFAULT_TOPIC = "mint.adapter-events"
READ_STALL_S = 30.0  # a read of another replica's partition that makes no progress fails
log = logging.getLogger(__name__)


def partition_for(stream_id: str, partitions: int) -> int:
    """Kafka's own key partitioning (murmur2), so any Kafka client agrees on it."""
    return int(murmur2(stream_id.encode()) & 0x7FFFFFFF) % partitions


class KafkaEventLog(EventLog):
    def __init__(
        self,
        kafka: KafkaConnection,
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
        self.kafka, self.topic, self.partitions = kafka, topic, partitions
        self.txn_prefix = txn_prefix
        create_log_topic(kafka, topic, partitions, replication)
        create_snapshot_topic(kafka, topic, partitions, replication)
        actual = topic_partitions(kafka, topic, CREATED_TOPIC_WAIT_S)
        if actual != partitions:
            # Streams are placed by hashing over the partition count: two counts would
            # give one stream two single writers.
            raise ValueError(
                f"topic {topic} has {actual} partitions, not {partitions}: "
                "configure every replica and reader with the topic's count"
            )
        self.writer = LogWriter(kafka, topic, txn_prefix)
        # Where another replica's partition is written ("" unknown): set by group ownership.
        self.owner_of: Callable[[int], str] = lambda partition: ""
        for p in range(partitions) if owned is None else owned:
            self.take(p)

    def use_claims(self, claims: Claims) -> None:
        """Own partitions as a consumer group assigns them, each claimed by this replica's
        transactional id (before any is taken)."""
        if self.writer.assigned:
            raise RuntimeError("claims must be set before any partition is taken")
        self.writer.claims = claims

    def take(self, partition: int) -> None:
        self.writer.take(partition)

    def give_up(self, partition: int) -> None:
        self.writer.give_up(partition)

    def assigned(self) -> set[int]:
        """The partitions this replica was told to own (taken or being taken again)."""
        with self.writer.lock:
            return set(self.writer.assigned)

    def owned(self) -> set[int]:
        """The partitions this replica writes now: fenced, claimed and rebuilt."""
        return self.writer.owned()

    def check_writable(self, stream_id: str) -> None:
        partition = partition_for(stream_id, self.partitions)
        if partition in self.writer.assigned:
            return
        owner = self.owner_of(partition)
        where = f"its owner is at {owner}: retry there" if owner else "retry elsewhere"
        raise Unavailable(f"this replica does not own partition {partition}; {where}", owner)

    def writer_elsewhere(self, stream_id: str) -> str:
        partition = partition_for(stream_id, self.partitions)
        return "" if partition in self.writer.assigned else self.owner_of(partition)

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        self.check_writable(stream_id)
        partition = partition_for(stream_id, self.partitions)
        with _unavailable_on_failure("appending"):
            return self.writer.append(partition, stream_id, expected_version, events, meta)

    def read_state(self, stream_id: str) -> StreamState | None:
        partition = partition_for(stream_id, self.partitions)
        try:
            snapshot = self.writer.snapshot(partition, stream_id)
        except NotHeld:
            return StreamState.of(self.read_stream(stream_id))
        return None if snapshot is None else stream_state(snapshot)

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]:
        partition = partition_for(stream_id, self.partitions)
        with _unavailable_on_failure("reading a stream"):
            try:  # ours: its snapshot says where its events are
                snapshot = self.writer.snapshot(partition, stream_id)
            except NotHeld:
                snapshot = None
            else:
                runs = located_after(snapshot, after_version) if snapshot else []
                if not runs:
                    return []
                stall_s = time_left(READ_STALL_S)
                return read_located(self.kafka, self.topic, partition, stream_id, runs, stall_s)
            if partition in self.writer.assigned:  # ours, being taken again: state comes soon
                raise Unavailable(f"partition {partition} is being taken again here; retry")
            # Another replica's: read the partition, but never past the caller's deadline
            # (a partition without a leader would hold the read until it has one). Read
            # past open transactions: a commit returns before its markers are written, and
            # what another replica just acknowledged must not read as missing here.
            records = read_partitions(
                self.kafka,
                self.topic,
                {partition: 0},
                stall_s=time_left(READ_STALL_S),
                past_open_transactions=True,
            )
            return [
                r
                for r in records
                if r.envelope.stream_id == stream_id and r.envelope.stream_version > after_version
            ]

    def read_all(
        self, after: Checkpoint | None = None, on_foreign: OnForeign | None = None
    ) -> Iterator[Recorded]:
        start = self._start(after)
        return _guarded(read_partitions(self.kafka, self.topic, start, on_foreign=on_foreign))

    def read_partition(self, partition: int, after: int) -> Iterator[Recorded]:
        start = {partition: after}
        return _guarded(read_partitions(self.kafka, self.topic, start, stall_s=READ_STALL_S))

    def subscribe(self, after: Checkpoint | None, idle_timeout_s: float) -> Iterator[Recorded]:
        return _guarded(read_partitions(self.kafka, self.topic, self._start(after), idle_timeout_s))

    def _start(self, after: Checkpoint | None) -> dict[int, int]:
        return {p: (after or {}).get(p, 0) for p in range(self.partitions)}

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _unavailable_on_failure(action: str) -> Iterator[None]:
    try:
        yield
    except KafkaError as exc:
        log.warning("Kafka failed while %s: %s", action, exc)  # callers only see Unavailable
        raise Unavailable(
            f"the event log is unavailable ({action}: {type(exc).__name__}); retry"
        ) from exc


def _guarded(records: Iterator[Recorded]) -> Iterator[Recorded]:
    with _unavailable_on_failure("reading the log"):
        yield from records


__all__ = ["DEFAULT_TOPIC", "KafkaEventLog", "next_checkpoint", "partition_for"]
