"""Reading the event topic: committed records only, from a checkpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from mint.eventlog.port import OnForeign, Position, Recorded
from mint.v1.events_pb2 import EventEnvelope

from .kafka import KafkaConnection

# Rebuilds and replays read whole partitions: fetch in large pieces (the client's 1 MiB
# default costs a round trip per ~5,000 events).
FETCH_BYTES = 8 << 20


def _consumer(kafka: KafkaConnection, isolation_level: str = "read_committed") -> KafkaConsumer:
    return KafkaConsumer(
        **kafka.options(),
        isolation_level=isolation_level,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=4 * FETCH_BYTES,
    )


def high_watermarks(
    kafka: KafkaConnection, tps: list[TopicPartition], timeout_s: float = 30.0
) -> dict[TopicPartition, int]:
    """The end of each partition counting records of open transactions (a committed
    reader's end stops before the first open transaction)."""
    consumer = _consumer(kafka, "read_uncommitted")
    try:
        return dict(consumer.end_offsets(tps, timeout_ms=_ms(timeout_s)))
    finally:
        consumer.close()


def to_recorded(record: Any) -> Recorded:
    envelope = EventEnvelope.FromString(record.value)
    return Recorded(envelope, Position(record.partition, record.offset), record.value)


def read_partitions(
    kafka: KafkaConnection,
    topic: str,
    start: dict[int, int],
    follow_s: float | None = None,
    stall_s: float = 60.0,
    past_open_transactions: bool = False,
    on_foreign: OnForeign | None = None,
) -> Iterator[Recorded]:
    """The events of `topic` from `start` (see `read_records`). A record that is no event
    envelope raises DecodeError, or, given `on_foreign`, is passed to it and skipped."""
    for record in read_records(kafka, topic, start, follow_s, stall_s, past_open_transactions):
        try:
            recorded = to_recorded(record)
        except DecodeError as exc:
            if on_foreign is None:
                raise
            on_foreign(record.partition, record.offset, f"no event envelope: {exc}")
            continue
        yield recorded


def read_located(
    kafka: KafkaConnection,
    topic: str,
    partition: int,
    stream_id: str,
    runs: Sequence[tuple[int, int, int]],
    stall_s: float,
) -> list[Recorded]:
    """The stream's events of each run (first version, last version, an offset at or
    before them), in version order: a short read from each run's offset, not a read of
    the partition."""
    found: list[Recorded] = []
    consumer = _consumer(kafka)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        deadline = time.monotonic() + stall_s
        for first, last, from_offset in runs:
            consumer.seek(tp, from_offset)
            version = first
            while version <= last:
                if time.monotonic() > deadline:
                    raise KafkaTimeoutError(f"{stream_id} version {version} not found in time")
                for record in consumer.poll(timeout_ms=200).get(tp, []):
                    recorded = to_recorded(record)
                    e = recorded.envelope
                    if e.stream_id == stream_id and e.stream_version == version:
                        found.append(recorded)
                        version += 1
                        if version > last:
                            break
    finally:
        consumer.close()
    return found


def read_records(
    kafka: KafkaConnection,
    topic: str,
    start: dict[int, int],
    follow_s: float | None = None,
    stall_s: float = 60.0,
    past_open_transactions: bool = False,
) -> Iterator[Any]:
    """Committed records (kafka-python's) of `topic` from `start` (partition -> next offset).

    With follow_s None: up to each partition's end as of the call, raising
    KafkaTimeoutError if the reading makes no progress for `stall_s` (a partition without
    a leader). Otherwise keep reading until nothing new has arrived for `follow_s` seconds.
    With past_open_transactions the end includes records of transactions still open, so
    the reading waits until they commit or abort (or stalls). Finding the end and each
    position waits at most `stall_s` too.
    """
    consumer = _consumer(kafka)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        end: dict[TopicPartition, int] = {}
        if follow_s is None and past_open_transactions:
            end = high_watermarks(kafka, tps, stall_s)
        elif follow_s is None:
            end = consumer.end_offsets(tps, timeout_ms=_ms(stall_s))
        idle_since = time.monotonic()
        progress: tuple[dict[TopicPartition, int], float] = ({}, time.monotonic())
        while True:
            if follow_s is None:
                positions = {tp: consumer.position(tp, timeout_ms=_ms(stall_s)) for tp in tps}
                if all(positions[tp] >= end[tp] for tp in tps):
                    return
                if positions != progress[0]:
                    progress = (positions, time.monotonic())
                elif time.monotonic() - progress[1] > stall_s:
                    raise KafkaTimeoutError(
                        f"reading {topic} made no progress for {stall_s} s "
                        f"(at {positions}, end {end})"
                    )
            if follow_s is not None and time.monotonic() - idle_since > follow_s:
                return
            batches = consumer.poll(timeout_ms=200)
            for tp in tps:  # keep per-partition order; partitions in a stable order
                for record in batches.get(tp, []):
                    if follow_s is None and record.offset >= end[tp]:
                        continue
                    idle_since = time.monotonic()
                    yield record
    finally:
        consumer.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))  # no time left still asks once
