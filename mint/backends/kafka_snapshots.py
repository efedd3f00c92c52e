"""The snapshot topic: a compacted table of folded streams beside the event topic.

`<events topic>.snapshots` has the event topic's partitions; partition p holds, keyed by
stream id, the latest snapshot of every stream of event partition p, and under
`SUMMARY_KEY` the partition's summary: how far into the events the snapshots reach, how
many streams there are, and the XOR of the sha256 of every snapshot. The writer puts
each transaction's snapshots and summary in that same transaction (the changelog of a
Kafka Streams store), so they never lag the events they fold.

A new owner loads the table instead of replaying the partition, then reads only the
events after `next_offset`. The table is a cache, never the truth: if the summary is
missing or does not match the snapshots read (a snapshot missing, stale or corrupt,
one too many), the partition is read from the log as before and every snapshot is
written again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mint.eventlog import snapshots
from mint.v1.snapshots_pb2 import PartitionSummary

from .kafka import COMPACTED, KafkaConnection, create_log_topic
from .kafka_batch import PartitionState
from .kafka_reader import read_records

log = logging.getLogger(__name__)


def snapshot_topic(events_topic: str) -> str:
    return f"{events_topic}.snapshots"


def create_snapshot_topic(
    kafka: KafkaConnection, events_topic: str, partitions: int, replication: int
) -> None:
    create_log_topic(
        kafka, snapshot_topic(events_topic), partitions, replication, configs=COMPACTED
    )


@dataclass
class Restored:
    """What the snapshot table of a partition gave: its state if the table is whole and
    consistent (else None, and `why`), and every key it holds (to tombstone leftovers)."""

    state: PartitionState | None
    keys: set[bytes] = field(default_factory=set)
    why: str = ""


def restore(kafka: KafkaConnection, events_topic: str, partition: int, stall_s: float) -> Restored:
    table: dict[bytes, bytes] = {}
    for record in read_records(
        kafka,
        snapshot_topic(events_topic),
        {partition: 0},
        stall_s=stall_s,
        past_open_transactions=True,
    ):
        if record.value is None:
            table.pop(record.key, None)
        else:
            table[record.key] = record.value
    keys = set(table)
    raw_summary = table.pop(snapshots.SUMMARY_KEY, None)
    if raw_summary is None:
        return Restored(None, keys, "no summary" if table else "")
    try:
        summary = PartitionSummary.FromString(raw_summary)
    except Exception:  # protobuf raises DecodeError, or others on garbage
        return Restored(None, keys, "the summary does not parse")
    digest = snapshots.EMPTY_DIGEST
    for value in table.values():
        digest = snapshots.xor(digest, snapshots.digest(value))
    if summary.streams != len(table) or summary.digest != digest:
        return Restored(
            None,
            keys,
            f"{len(table)} snapshots do not match the summary of {summary.streams} "
            "(one is missing, stale or corrupt)",
        )
    try:
        streams = {key.decode(): value for key, value in table.items()}
    except UnicodeDecodeError:
        return Restored(None, keys, "a snapshot's key is not a stream id")
    return Restored(PartitionState(streams, summary.next_offset, digest), keys)
