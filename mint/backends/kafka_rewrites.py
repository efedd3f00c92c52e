"""Snapshots the writer writes again, beside a batch's own (kafka_writer.py).

A take that finds a partition's snapshots invalid, or lagging the events, reads the
partition from the log and then owes its snapshot table a rewrite: every stream's
snapshot, and tombstones for the keys left over. A large partition's rewrite is spread
over transactions, REWRITE_CHUNK snapshots at most in each. A partition given up is said
to be so by a summary naming the claim that released it (`snapshots_summary`).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from mint.eventlog import snapshots
from mint.eventlog.snapshots import SUMMARY_KEY

from .kafka_batch import PartitionState

# Snapshots written again per transaction, at most: commands wait behind one such
# transaction (20,000 took 1.5 s at 10^6 adapters here, the commands' p99 with it).
REWRITE_CHUNK = 2_000


@dataclass
class Rewrite:
    """Snapshots of a partition still to write again, and leftover keys to tombstone."""

    streams: list[str]
    tombstones: list[bytes]

    @classmethod
    def of(cls, state: PartitionState, keys: set[bytes]) -> Rewrite:
        streams = list(state.streams)
        leftover = keys - {s.encode() for s in streams} - {SUMMARY_KEY}
        return cls(streams, sorted(leftover))

    @property
    def size(self) -> int:
        return len(self.streams) + len(self.tombstones)

    def first(self, n: int) -> Rewrite:
        tombstones = self.tombstones[:n]
        return Rewrite(self.streams[: n - len(tombstones)], tombstones)

    def drop(self, written: Rewrite) -> bool:
        """Forget what `written` wrote (a prefix); True when nothing is left."""
        del self.tombstones[: len(written.tombstones)]
        del self.streams[: len(written.streams)]
        return self.size == 0


def first_chunks(pending: dict[int, Rewrite], taken: Container[int]) -> dict[int, Rewrite]:
    """The next snapshots of `taken` partitions to write again, REWRITE_CHUNK at most in
    all: one transaction of a whole large partition would outlast the transaction timeout."""
    chunks: dict[int, Rewrite] = {}
    left = REWRITE_CHUNK
    for partition, rewrite in pending.items():
        if partition in taken and left > 0:
            chunks[partition] = rewrite.first(left)
            left -= chunks[partition].size
    return chunks


def snapshots_summary(state: PartitionState, released_by: str = "") -> bytes:
    summary = snapshots.summary(state.next_offset, len(state.streams), state.digest)
    summary.released_by = released_by
    return summary.SerializeToString()
