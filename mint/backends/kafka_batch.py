"""One batch of appends, checked against the state of the partitions it writes.

Pure: no Kafka here. The writer (kafka_writer.py) holds a `PartitionState` per partition
it owns, queues `PendingAppend`s, and before each transaction lets `check_batch` settle
retries and conflicts and seal the rest into the streams' hash chains.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from mint.domain.errors import DomainError, InvalidArgument, VersionConflict
from mint.domain.events import Event
from mint.eventlog.port import AppendResult, Metadata, Recorded, build_envelopes
from mint.v1.events_pb2 import EventEnvelope

# Well under Kafka's default 1 MiB record limit: one oversized event must fail alone, not
# poison the transaction it would share with other commands.
MAX_EVENT_BYTES = 256 * 1024


@dataclass
class PartitionState:
    """What a partition's writer knows: every stream's events and every request id."""

    streams: dict[str, list[Recorded]] = field(default_factory=dict)
    requests: dict[tuple[str, str], AppendResult] = field(default_factory=dict)
    next_offset: int = 0  # everything committed before this offset is in the state

    def observe(self, recorded: Recorded) -> None:
        self.next_offset = max(self.next_offset, recorded.position.offset + 1)
        env = recorded.envelope
        self.streams.setdefault(env.stream_id, []).append(recorded)
        key = (env.stream_id, env.request_id)
        first = self.requests.get(key)
        start = first.first_version if first else env.stream_version
        self.requests[key] = AppendResult(env.stream_id, start, env.stream_version, True)


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
        state = partitions[p.partition]
        key = (p.stream_id, p.meta.request_id)
        if key in state.requests:
            p.finish(state.requests[key])
            continue
        if key in seen:
            repeats.append((p, seen[key]))
            continue
        stream = state.streams.get(p.stream_id, [])
        version, last_hash = tails.get(
            p.stream_id, (len(stream), stream[-1].envelope.hash if stream else b"")
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
