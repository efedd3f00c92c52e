"""The `EventLog` port: what every back end (Kafka, embedded SQLite) guarantees.

Contract (tests/contract/test_event_log.py runs it against each back end):
1. per-stream total order, versions contiguous from 1;
2. optimistic concurrency: a stale `expected_version` raises VersionConflict, appends nothing;
3. idempotency: a retry with the same request id appends nothing, returns the first result;
4. every event sealed into its stream's hash chain;
5. `read_all` / `subscribe` deliver events from a checkpoint in log order per partition.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from google.protobuf.timestamp_pb2 import Timestamp

from mint.domain.events import Event
from mint.v1.events_pb2 import EventEnvelope

from . import codec
from .chain import seal

# partition -> next offset to read; the embedded back end has one partition, 0.
Checkpoint = Mapping[int, int]


@dataclass(frozen=True)
class Position:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"partition {self.partition} offset {self.offset}"


@dataclass(frozen=True)
class Recorded:
    """An event as stored: its envelope, where it sits in the log, and the bytes the log
    holds for it (what its hash covers; b"" where the reader does not keep them)."""

    envelope: EventEnvelope
    position: Position
    stored: bytes = field(default=b"", repr=False)

    @cached_property
    def event(self) -> Event:
        e = self.envelope
        return codec.decode(e.event_type, e.schema_version, e.payload)


@dataclass(frozen=True)
class StreamState:
    """A stream folded up to `version`: events whose fold is its state (its whole history,
    or fewer: a snapshot's compacted events), and the versions each request made."""

    version: int
    last_event_id: str
    events: tuple[Event, ...]
    requests: Mapping[str, tuple[int, int]]  # request id -> (first, last) version

    @classmethod
    def of(cls, recorded: Sequence[Recorded]) -> StreamState | None:
        """The state of a stream read whole (None if it has no events)."""
        if not recorded:
            return None
        requests: dict[str, tuple[int, int]] = {}
        for r in recorded:
            e = r.envelope
            requests[e.request_id] = (
                requests.get(e.request_id, (e.stream_version,))[0],
                e.stream_version,
            )
        last = recorded[-1].envelope
        return cls(last.stream_version, last.event_id, tuple(r.event for r in recorded), requests)


@dataclass(frozen=True)
class Metadata:
    actor: str  # the authenticated principal
    request_id: str  # client-chosen; retries reuse it
    correlation_id: str = ""
    causation_id: str = ""


@dataclass(frozen=True)
class AppendResult:
    stream_id: str
    first_version: int
    last_version: int
    duplicate: bool = False  # True: a retry of an earlier request; nothing was appended


# Told of each record that is no event envelope (partition, offset, why), which is skipped.
OnForeign = Callable[[int, int, str], None]


class EventLog(ABC):
    partitions: int = 1  # positions name partitions 0 .. partitions - 1

    @abstractmethod
    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        """Append `events` as versions expected_version+1..; all or nothing.

        Raises VersionConflict if the stream is not at `expected_version` (0: new stream),
        unless `meta.request_id` was already appended to this stream, in which case the
        first result comes back with duplicate=True and nothing is appended.
        """

    @abstractmethod
    def check_writable(self, stream_id: str) -> None:
        """Raise Unavailable if this log cannot append to the stream now (another replica
        writes it), so that a command refused anyway does no work first."""

    def writer_elsewhere(self, stream_id: str) -> str:
        """The address of another replica that writes the stream, if this log knows one
        ("": this one writes it, or no one is known). Reads are cheapest there: it holds
        the stream's state, while reading here scans the stream's whole partition."""
        return ""

    @abstractmethod
    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]:
        """The stream's events after `after_version` (default: all), in version order
        (empty if it does not exist)."""

    def read_state(self, stream_id: str) -> StreamState | None:
        """The stream's folded state (None if it does not exist). This reads it whole; a
        back end that keeps snapshots answers from them."""
        return StreamState.of(self.read_stream(stream_id))

    @abstractmethod
    def read_all(
        self, after: Checkpoint | None = None, on_foreign: OnForeign | None = None
    ) -> Iterator[Recorded]:
        """Events from `after` (default: the beginning) up to the end as of this call. A
        record that is no event envelope raises DecodeError, or, given `on_foreign`, is
        passed to it and skipped."""

    def read_partition(self, partition: int, after: int) -> Iterator[Recorded]:
        """One partition's events from offset `after` (the next to read) up to its end as
        of this call (what checkpoints are signed from). This reads every partition; a
        back end with several reads only the one."""
        return (r for r in self.read_all({partition: after}) if r.position.partition == partition)

    @abstractmethod
    def subscribe(self, after: Checkpoint | None, idle_timeout_s: float) -> Iterator[Recorded]:
        """Like read_all, then keeps waiting for new events; stops after `idle_timeout_s`
        with nothing new."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files."""


def build_envelopes(
    stream_id: str,
    expected_version: int,
    prev_hash: bytes,
    events: Sequence[Event],
    meta: Metadata,
) -> list[EventEnvelope]:
    """Envelopes for `events`, numbered after `expected_version` and sealed into the chain."""
    now = Timestamp()
    now.FromNanoseconds(time.time_ns())
    envelopes = []
    for i, event in enumerate(events, start=1):
        event_type, schema_version, payload = codec.encode(event)
        envelope = EventEnvelope(
            event_id=str(uuid.uuid4()),
            event_type=event_type,
            schema_version=schema_version,
            stream_id=stream_id,
            stream_version=expected_version + i,
            occurred_at=now,
            actor=meta.actor,
            correlation_id=meta.correlation_id,
            causation_id=meta.causation_id,
            request_id=meta.request_id,
            payload=payload,
        )
        prev_hash = seal(envelope, prev_hash).hash
        envelopes.append(envelope)
    return envelopes


def next_checkpoint(checkpoint: Checkpoint | None, recorded: Recorded) -> dict[int, int]:
    """The checkpoint just after `recorded`."""
    updated = dict(checkpoint or {})
    updated[recorded.position.partition] = recorded.position.offset + 1
    return updated
