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
import time
from dataclasses import dataclass, field

from mint.eventlog import snapshots
from mint.v1.snapshots_pb2 import PartitionSummary

from .kafka import COMPACTED, KafkaConnection, create_log_topic
from .kafka_batch import PartitionState
from .kafka_reader import read_records

log = logging.getLogger(__name__)
RELEASE_POLL_S = 0.05
SNAPSHOT_TOPIC_MAX_BYTES = 16 << 20  # a stream's snapshot (up to 8 MiB) is one record


def snapshot_topic(events_topic: str) -> str:
    return f"{events_topic}.snapshots"


def create_snapshot_topic(
    kafka: KafkaConnection, events_topic: str, partitions: int, replication: int
) -> None:
    configs = {**COMPACTED, "max.message.bytes": str(SNAPSHOT_TOPIC_MAX_BYTES)}
    create_log_topic(kafka, snapshot_topic(events_topic), partitions, replication, configs=configs)


@dataclass
class Restored:
    """What the snapshot table of a partition gave: its state if the table is whole and
    consistent (else None, and `why`), and every key it holds (to tombstone leftovers)."""

    state: PartitionState | None
    keys: set[bytes] = field(default_factory=set)
    why: str = ""


class SnapshotTable:
    """One partition's snapshot table, read from its beginning and on as it grows."""

    def __init__(self, kafka: KafkaConnection, events_topic: str, partition: int) -> None:
        self.kafka, self.topic, self.partition = kafka, snapshot_topic(events_topic), partition
        self.table: dict[bytes, bytes] = {}
        self.next_offset = 0

    def read(self, stall_s: float, past_open_transactions: bool = True) -> None:
        """Read on to the partition's end, waiting out open transactions; or, without
        `past_open_transactions`, to the first one still open."""
        for record in read_records(
            self.kafka,
            self.topic,
            {self.partition: self.next_offset},
            stall_s=stall_s,
            past_open_transactions=past_open_transactions,
        ):
            self.next_offset = record.offset + 1
            if record.value is None:
                self.table.pop(record.key, None)
            else:
                self.table[record.key] = record.value

    def released_by(self) -> str:
        """The claim under which the partition was given up last, if it was."""
        summary = self._summary()
        return summary.released_by if summary is not None else ""

    def wait_for_release(self, writer: str, wait_s: float, stall_s: float) -> bool:
        """Whether `writer` gave the partition up, reading on for up to `wait_s` to see."""
        deadline = time.monotonic() + wait_s
        while True:
            # Not past open transactions: a writer that died in one leaves it open until
            # it is fenced (which is what follows when no release is found).
            self.read(stall_s, past_open_transactions=False)
            if self.released_by() == writer:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(RELEASE_POLL_S)

    def restored(self) -> Restored:
        table = dict(self.table)
        keys = set(table)
        raw_summary = table.pop(snapshots.SUMMARY_KEY, None)
        if raw_summary is None:
            return Restored(None, keys, "no summary" if table else "")
        summary = self._summary()
        if summary is None:
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

    def _summary(self) -> PartitionSummary | None:
        raw = self.table.get(snapshots.SUMMARY_KEY)
        if raw is None:
            return None
        try:
            return PartitionSummary.FromString(raw)
        except Exception:  # protobuf raises DecodeError, or others on garbage
            return None
