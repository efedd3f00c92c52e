"""The writer's batch check, without Kafka: conflicts, retries, repeats, chaining."""

from __future__ import annotations

from mint.backends.kafka_batch import MAX_EVENT_BYTES, PartitionState, PendingAppend, check_batch
from mint.domain.errors import InvalidArgument, VersionConflict
from mint.domain.events import ChannelMoved
from mint.eventlog.port import Position, Recorded
from tests.contract.event_log_contract import meta, moves


def _pending(stream: str, expected: int, request_id: str | None = None) -> PendingAppend:
    return PendingAppend(0, stream, expected, moves(expected + 1), meta(request_id))


def test_commands_on_one_stream_chain_within_a_batch() -> None:
    first, second = _pending("t/a", 0), _pending("t/a", 1)
    accepted, repeats = check_batch([first, second], {0: PartitionState()})
    assert accepted == [first, second] and repeats == []
    assert second.envelopes[0].prev_hash == first.envelopes[0].hash
    assert [p.envelopes[0].stream_version for p in accepted] == [1, 2]


def test_a_stale_version_conflicts_and_a_known_request_returns_its_first_result() -> None:
    state = PartitionState()
    (done,), _ = check_batch([_pending("t/a", 0, "r1")], {0: state})
    state.observe([Recorded(done.envelopes[0], Position(0, 7))])
    stale, retry = _pending("t/a", 0), _pending("t/a", 0, "r1")
    accepted, _ = check_batch([stale, retry], {0: state})
    assert accepted == []
    assert isinstance(stale.error, VersionConflict)
    assert retry.result is not None and retry.result.duplicate
    assert state.next_offset == 8


def test_the_same_request_twice_in_a_batch_is_appended_once() -> None:
    first, again = _pending("t/a", 0, "r"), _pending("t/a", 0, "r")
    accepted, repeats = check_batch([first, again], {0: PartitionState()})
    assert accepted == [first] and repeats == [(again, first)]


def test_an_oversized_event_fails_alone() -> None:
    huge = PendingAppend(0, "t/a", 0, [ChannelMoved("x" * MAX_EVENT_BYTES, 1, 0)], meta())
    fine = _pending("t/b", 0)
    accepted, _ = check_batch([huge, fine], {0: PartitionState()})
    assert accepted == [fine]
    assert isinstance(huge.error, InvalidArgument) and "limit" in str(huge.error)


def _folded(state: PartitionState) -> dict[str, tuple[object, ...]]:
    """Each stream's snapshot less where its runs are located (a chunk boundary adds one)."""
    folded: dict[str, tuple[object, ...]] = {}
    for stream in state.streams:
        snap = state.snapshot(stream)
        assert snap is not None
        requests = [(r.request_id, r.first_version, r.last_version) for r in snap.requests]
        state_bytes = [e.SerializeToString() for e in snap.state]
        folded[stream] = (snap.version, snap.last_hash, snap.last_event_id, requests, state_bytes)
    return folded


def test_a_catch_up_folded_a_chunk_at_a_time_is_the_catch_up_in_one_go() -> None:
    """A take folds what it reads in chunks (bounded memory): each stream's snapshot is
    the same, its events split across chunks, and every run is located at or before the
    offset of its first event."""
    pending = [_pending(f"t/{s}", v) for v in range(3) for s in "abcd"]  # 4 streams, v1-v3
    accepted, _ = check_batch(pending, {0: PartitionState()})
    envelopes = [e for p in accepted for e in p.envelopes]
    records = [Recorded(e, Position(0, offset)) for offset, e in enumerate(envelopes)]
    whole, chunked = PartitionState(), PartitionState()
    assert whole.observe(records) and chunked.observe(iter(records), chunk=5)
    assert _folded(chunked) == _folded(whole)
    assert chunked.next_offset == whole.next_offset == len(records) == 12
    offset_of = {(e.stream_id, e.stream_version): n for n, e in enumerate(envelopes)}
    for stream in chunked.streams:
        snap = chunked.snapshot(stream)
        assert snap is not None and len(snap.located) >= 2  # v1-v3 over chunks of 5
        for run in snap.located:
            assert run.from_offset <= offset_of[(stream, run.first_version)]
    assert not chunked.observe(records, chunk=5)  # folded in already: nothing new
