"""One batch of appends, checked against the state of the partitions it writes.

Pure: no Kafka here. The writer (kafka_writer.py) holds a `PartitionState` per partition
it owns, queues `PendingAppend`s, and before each transaction lets `check_batch` settle
retries and conflicts and seal the rest into the streams' hash chains; the snapshots the
transaction writes beside its events are `PartitionState.stage`d.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from mint.domain.errors import DomainError, InvalidArgument, Unavailable, VersionConflict
from mint.domain.events import Event
from mint.eventlog import snapshots
from mint.eventlog.chain import NO_EVENTS, follows
from mint.eventlog.port import AppendResult, Metadata, Recorded, build_envelopes
from mint.v1.events_pb2 import EventEnvelope
from mint.v1.snapshots_pb2 import StreamSnapshot

# Well under Kafka's default 1 MiB record limit: one oversized event must fail alone, not
# poison the transaction it would share with other commands.
MAX_EVENT_BYTES = 256 * 1024
OBSERVE_CHUNK = 10_000  # events folded in at a time by a take
log = logging.getLogger(__name__)


@dataclass
class Staged:
    """A partition's snapshots after a transaction, written in it and kept once it commits."""

    values: dict[str, bytes]  # stream id -> its new StreamSnapshot bytes
    digest: bytes
    streams: int
    next_offset: int  # what the summary says
    read_to: int = 0  # where the writer's state reads on from, once committed

    def summary(self) -> bytes:
        return snapshots.summary(self.next_offset, self.streams, self.digest).SerializeToString()


@dataclass
class PartitionState:
    """What a partition's writer knows: each stream's snapshot (its head, request ids and
    folded state, not its events) and the digest of them all (snapshots.proto)."""

    streams: dict[str, bytes] = field(default_factory=dict)  # stream id -> snapshot bytes
    next_offset: int = 0  # everything committed before this offset is in the state
    digest: bytes = snapshots.EMPTY_DIGEST

    def snapshot(self, stream_id: str) -> StreamSnapshot | None:
        value = self.streams.get(stream_id)
        return None if value is None else StreamSnapshot.FromString(value)

    def stage(self, events: Iterable[tuple[EventEnvelope, int]]) -> Staged:
        """The snapshots with `events` folded in: (envelope, an offset at or before it), in
        log order. This state is unchanged; the summary says what it said."""
        by_stream: dict[str, tuple[int, list[EventEnvelope]]] = {}
        for e, offset in events:
            by_stream.setdefault(e.stream_id, (offset, []))[1].append(e)
        values, digest = {}, self.digest
        for stream_id, (from_offset, envelopes) in by_stream.items():
            extended = snapshots.extend(self.snapshot(stream_id), envelopes, from_offset)
            if extended is None:  # folded in already
                continue
            new = extended.SerializeToString()
            old = self.streams.get(stream_id)
            if old is not None:
                digest = snapshots.xor(digest, snapshots.digest(old))
            digest = snapshots.xor(digest, snapshots.digest(new))
            values[stream_id] = new
        streams = len(self.streams) + sum(1 for s in values if s not in self.streams)
        return Staged(values, digest, streams, self.next_offset)

    def keep(self, staged: Staged) -> None:
        self.streams.update(staged.values)
        self.digest = staged.digest
        self.next_offset = max(self.next_offset, staged.next_offset, staged.read_to)

    def observe(self, recorded: Iterable[Recorded], chunk: int = OBSERVE_CHUNK) -> bool:
        """Fold in events read from the log (a take catching up), `chunk` at a time, so
        that a take holds one chunk's events rather than the partition's (a replica
        replaying 10^6 adapters' 3M events peaked at 6 GiB); True if any was new."""
        records, new = iter(recorded), False
        while batch := list(islice(records, chunk)):
            staged = self.stage((r.envelope, r.position.offset) for r in self._chained(batch))
            staged.read_to = batch[-1].position.offset + 1
            self.keep(staged)
            new = new or bool(staged.values)
        return new

    def _chained(self, batch: list[Recorded]) -> Iterator[Recorded]:
        """The records that carry their stream's chain on, or that it holds already. Any
        other no registry wrote (a version out of order, a link to another head): it is
        logged and left out of the state, so that one such record cannot stop every take
        of its partition. (Which events a stream may hold is the domain's to say: a
        stream that does not fold is DATA_LOSS to its commands, mint/commands.py.)"""
        heads: dict[str, tuple[int, bytes]] = {}  # stream -> (version, hash) so far
        for r in batch:
            e = r.envelope
            if e.stream_id not in heads:
                snapshot = self.snapshot(e.stream_id)
                heads[e.stream_id] = (
                    (snapshot.version, snapshot.last_hash) if snapshot else NO_EVENTS
                )
            version, last_hash = heads[e.stream_id]
            if e.stream_version <= version:
                yield r  # held already (a summary lagging its events): folding skips it
            elif follows(e, (version, last_hash)):
                heads[e.stream_id] = (e.stream_version, e.hash)
                yield r
            else:
                log_foreign(
                    r.position.partition,
                    r.position.offset,
                    f"{e.stream_id} version {e.stream_version} does not follow version "
                    f"{version} of its chain",
                )


def log_foreign(partition: int, offset: int, why: str) -> None:
    """A record of a partition this replica writes that no registry wrote."""
    log.error(
        "partition %d offset %d was written by no registry (%s); left out of the state: "
        "run `python -m mint.audit verify`",
        partition,
        offset,
        why,
    )


@dataclass
class PendingAppend:
    """A caller's append, waiting for its batch's outcome."""

    partition: int
    stream_id: str
    expected_version: int
    events: Sequence[Event]
    meta: Metadata
    done: threading.Event = field(default_factory=threading.Event)
    result: AppendResult | None = None
    error: DomainError | None = None
    envelopes: list[EventEnvelope] = field(default_factory=list)

    def finish(self, result: AppendResult | None = None, error: DomainError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def finish_as_repeat_of(self, first: PendingAppend) -> None:
        """The same request as `first`, in the same batch: one append, answered twice."""
        result = first.result and AppendResult(
            first.result.stream_id,
            first.result.first_version,
            first.result.last_version,
            duplicate=True,
        )
        self.finish(result, first.error)

    def outcome(self, wait_s: float) -> AppendResult:
        """Its result, once its batch is done: raises its error, or Unavailable if that
        takes over `wait_s` or the batch broke off."""
        if not self.done.wait(timeout=wait_s):
            # It may still land: a retry with the same request id finds out, never twice.
            raise Unavailable(
                f"append to partition {self.partition} timed out; retry with the same request id"
            )
        if self.error is not None:
            raise self.error
        if self.result is None:  # its batch broke off unexpectedly
            raise Unavailable(f"append to partition {self.partition} was interrupted; retry")
        return self.result


def check_batch(
    batch: list[PendingAppend], partitions: dict[int, PartitionState]
) -> tuple[list[PendingAppend], list[tuple[PendingAppend, PendingAppend]]]:
    """Settle retries and conflicts; build envelopes for the rest, in batch order.

    Returns the commands to append and (repeat, first) pairs of one request sent twice.
    """
    tails: dict[str, tuple[int, bytes]] = {}  # stream -> (version, hash) incl. this batch
    seen: dict[tuple[str, str], PendingAppend] = {}
    accepted: list[PendingAppend] = []
    repeats: list[tuple[PendingAppend, PendingAppend]] = []
    for p in batch:
        snapshot = partitions[p.partition].snapshot(p.stream_id)
        key = (p.stream_id, p.meta.request_id)
        span = snapshot and snapshots.request_span(snapshot, p.meta.request_id)
        if span:
            p.finish(AppendResult(p.stream_id, span.first_version, span.last_version, True))
            continue
        if key in seen:
            repeats.append((p, seen[key]))
            continue
        version, last_hash = tails.get(
            p.stream_id, (snapshot.version, snapshot.last_hash) if snapshot else (0, b"")
        )
        if version != p.expected_version:
            p.finish(
                error=VersionConflict(
                    f"stream {p.stream_id} is at version {version}, not {p.expected_version}: "
                    "re-read it and retry"
                )
            )
            continue
        envelopes = build_envelopes(p.stream_id, version, last_hash, p.events, p.meta)
        too_big = [e for e in envelopes if e.ByteSize() > MAX_EVENT_BYTES]
        if too_big:
            p.finish(
                error=InvalidArgument(
                    f"an event of {too_big[0].ByteSize():,} bytes exceeds the "
                    f"{MAX_EVENT_BYTES:,}-byte limit; shorten its labels, metrics or notes"
                )
            )
            continue
        p.envelopes = envelopes
        tails[p.stream_id] = (version + len(p.events), p.envelopes[-1].hash)
        seen[key] = p
        accepted.append(p)
    return accepted, repeats
