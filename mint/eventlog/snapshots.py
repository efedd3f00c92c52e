"""Snapshots of folded streams (proto/mint/v1/snapshots.proto): extend, read, digest.

Pure: no Kafka here. A snapshot holds a stream's head (version, last hash and event id),
where its events are in the log (an offset at or before each transaction's), which
versions each request made, and events whose fold is its state
(`mint.domain.adapter.compact`), so that a new owner of a partition loads one record per
stream instead of replaying every event."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mint.domain import adapter as agg
from mint.domain.events import AdapterCreated, BaseModelRegistered, Event
from mint.v1.events_pb2 import EventEnvelope
from mint.v1.snapshots_pb2 import PartitionSummary, RequestSpan, StoredEvent, StreamSnapshot

from . import codec
from .port import StreamState

FORMAT = 1
SUMMARY_KEY = b"\x00summary"  # no stream id starts with NUL
EMPTY_DIGEST = bytes(32)


def extend(
    snapshot: StreamSnapshot | None, envelopes: Sequence[EventEnvelope], from_offset: int
) -> StreamSnapshot | None:
    """`snapshot` (None: a new stream) with `envelopes` folded in: its next events, in
    order, at or after event-topic offset `from_offset`. Events it already holds are
    skipped (a summary may lag its transaction's events); None if nothing is new."""
    version = snapshot.version if snapshot is not None else 0
    new = [e for e in envelopes if e.stream_version > version]
    if not new:
        return None
    out = StreamSnapshot(format=FORMAT)
    if snapshot is not None:
        out.CopyFrom(snapshot)
    out.located.add(first_version=new[0].stream_version, from_offset=from_offset)
    requests = {r.request_id: r for r in out.requests}
    for e in new:
        if e.stream_version != out.version + 1:
            raise ValueError(f"{e.stream_id} version {e.stream_version} after {out.version}")
        out.stream_id, out.version = e.stream_id, e.stream_version
        out.last_hash, out.last_event_id = e.hash, e.event_id
        span = requests.get(e.request_id)
        if span is None:
            span = requests[e.request_id] = out.requests.add(
                request_id=e.request_id, first_version=e.stream_version
            )
        span.last_version = e.stream_version
    events = [
        *_events(out),
        *(codec.decode(e.event_type, e.schema_version, e.payload) for e in new),
    ]
    del out.state[:]
    out.state.extend(_stored(e) for e in _compacted(events))
    return out


def located_after(snapshot: StreamSnapshot, after_version: int) -> list[tuple[int, int, int]]:
    """(first, last version, from offset) of each run of the stream's events past
    `after_version`: where to read them from."""
    runs = list(snapshot.located)
    found = []
    for i, run in enumerate(runs):
        last = runs[i + 1].first_version - 1 if i + 1 < len(runs) else snapshot.version
        first = max(run.first_version, after_version + 1)
        if first <= last:
            found.append((first, last, run.from_offset))
    return found


def stream_state(snapshot: StreamSnapshot) -> StreamState:
    return StreamState(
        snapshot.version,
        snapshot.last_event_id,
        tuple(_events(snapshot)),
        {r.request_id: (r.first_version, r.last_version) for r in snapshot.requests},
    )


def request_span(snapshot: StreamSnapshot, request_id: str) -> RequestSpan | None:
    return next((r for r in snapshot.requests if r.request_id == request_id), None)


def digest(value: bytes) -> bytes:
    """One stream's share of its partition's digest."""
    return hashlib.sha256(value).digest()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def summary(next_offset: int, streams: int, partition_digest: bytes) -> PartitionSummary:
    return PartitionSummary(
        format=FORMAT, next_offset=next_offset, streams=streams, digest=partition_digest
    )


def _events(snapshot: StreamSnapshot) -> list[Event]:
    return [codec.decode(s.event_type, s.schema_version, s.payload) for s in snapshot.state]


def _compacted(events: list[Event]) -> list[Event]:
    if not events:
        return []
    if isinstance(events[0], BaseModelRegistered):
        return events[:1]  # a base is registered once and never changes
    if not isinstance(events[0], AdapterCreated):
        return events  # not a stream the domain folds: kept whole
    state = agg.fold(events)  # type: ignore[arg-type]
    return [] if state is None else list(agg.compact(state))


def _stored(event: Event) -> StoredEvent:
    event_type, schema_version, payload = codec.encode(event)
    return StoredEvent(event_type=event_type, schema_version=schema_version, payload=payload)
