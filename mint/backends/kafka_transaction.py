"""One transaction of the writer (kafka_writer.py): what it sends, and its commit.

The writer gathers a transaction under its lock (`stage` seals the batch's new
snapshots) and sends it without the lock: the batch's events, each touched partition's
new snapshots and summary, a chunk of any snapshot rewrite owed (kafka_rewrites.py), and
the summaries saying partitions were given up. A commit that does not finish within
COMMIT_TIMEOUT_S counts as failed: kafka-python would otherwise wait on a lost
transaction coordinator for its whole delivery timeout, while a fresh producer finds the
new coordinator in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaProducer

from mint.domain.errors import FailedPrecondition
from mint.eventlog.chain import stored_bytes
from mint.eventlog.port import AppendResult
from mint.eventlog.snapshots import SUMMARY_KEY
from mint.v1.events_pb2 import EventEnvelope

from .kafka_batch import PartitionState, PendingAppend, Staged
from .kafka_producers import COMMIT_TIMEOUT_S, commit_within
from .kafka_rewrites import Rewrite

# One stream's snapshot is one record: below the writer's request size and the snapshot
# topic's max.message.bytes (kafka_producers.WRITER_PRODUCER, kafka_snapshots.py).
MAX_SNAPSHOT_BYTES = 8 << 20


@dataclass
class Transaction:
    """What one transaction writes, gathered under the writer's lock."""

    accepted: list[PendingAppend]  # commands that passed their checks
    staged: dict[int, Staged]  # each partition's snapshots after them
    # The states it reads, held here: a partition given up meanwhile (on the polling
    # thread) must not turn into a failed transaction.
    states: dict[int, PartitionState]
    rewrites: dict[int, Rewrite]  # chunks of owed snapshot rewrites
    releases: dict[int, bytes]  # summaries of partitions given up

    @property
    def partitions(self) -> set[int]:
        return {p.partition for p in self.accepted} | set(self.rewrites) | set(self.releases)

    def __bool__(self) -> bool:
        """Whether it writes anything."""
        return bool(self.accepted or self.rewrites or self.releases)

    def send(self, producer: KafkaProducer, topic: str, snapshot_topic: str) -> None:
        """Send it all and commit it as one; then each staged state reads on from its
        partition's last event. Raises what kafka-python raises."""
        producer.begin_transaction()
        futures = [
            (
                p.partition,
                producer.send(
                    topic,
                    key=p.stream_id.encode(),
                    value=stored_bytes(e),  # the bytes its hash covers
                    partition=p.partition,
                    headers=[("event-type", e.event_type.encode())],
                ),
            )
            for p in self.accepted
            for e in p.envelopes
        ]
        for partition, chunk in self.rewrites.items():
            state = self.states[partition]
            new = self.staged.setdefault(partition, state.stage(()))
            for key in chunk.tombstones:
                producer.send(snapshot_topic, key=key, value=None, partition=partition)
            for stream_id in chunk.streams:
                if stream_id not in new.values:  # else sent with the batch's below
                    value = state.streams[stream_id]
                    producer.send(
                        snapshot_topic, key=stream_id.encode(), value=value, partition=partition
                    )
        for partition, snapshot in self.staged.items():
            for stream_id, value in snapshot.values.items():
                producer.send(
                    snapshot_topic, key=stream_id.encode(), value=value, partition=partition
                )
            producer.send(
                snapshot_topic, key=SUMMARY_KEY, value=snapshot.summary(), partition=partition
            )
        for partition, summary in self.releases.items():
            producer.send(snapshot_topic, key=SUMMARY_KEY, value=summary, partition=partition)
        commit_within(producer, COMMIT_TIMEOUT_S)
        for partition, future in futures:
            offset = int(future.get(timeout=COMMIT_TIMEOUT_S).offset)
            self.staged[partition].read_to = max(self.staged[partition].read_to, offset + 1)

    def answer(self) -> None:
        """Tell each caller where its events landed (once committed)."""
        for p in self.accepted:
            p.finish(
                AppendResult(
                    p.stream_id, p.expected_version + 1, p.expected_version + len(p.events)
                )
            )


def stage(
    accepted: list[PendingAppend], states: dict[int, PartitionState]
) -> tuple[list[PendingAppend], dict[int, Staged]]:
    """The snapshots the batch makes, per partition (under the writer's lock). Every event
    lands at or after its partition's next offset: what the snapshots record, so that they
    need not wait for the events' acknowledgements. A stream whose snapshot would outgrow
    a record has its commands refused, alone."""
    while True:
        by_partition: dict[int, list[EventEnvelope]] = {}
        for p in accepted:
            by_partition.setdefault(p.partition, []).extend(p.envelopes)
        staged = {}
        for partition, envelopes in by_partition.items():
            state = states[partition]
            staged[partition] = state.stage((e, state.next_offset) for e in envelopes)
        oversized = {
            stream_id: len(value)
            for snapshot in staged.values()
            for stream_id, value in snapshot.values.items()
            if len(value) > MAX_SNAPSHOT_BYTES
        }
        if not oversized:
            return accepted, staged
        for p in accepted:
            if p.stream_id in oversized:
                p.finish(error=too_big(p.stream_id, oversized[p.stream_id]))
        accepted = [p for p in accepted if p.stream_id not in oversized]


def too_big(stream_id: str, size: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"{stream_id}'s folded state would take {size:,} bytes, over the {MAX_SNAPSHOT_BYTES:,} "
        "one snapshot may hold (its revisions' configs and request ids add up): archive it "
        "and go on in a new adapter"
    )
