"""The hash chain covers the exact bytes stored in the log (hash_format 1), and events
written before that (hash_format 0, over a re-serialization) still verify (no servers)."""

from __future__ import annotations

import hashlib

from mint.domain import events as ev
from mint.eventlog.chain import (
    HASH_OVER_STORED_BYTES,
    StreamChain,
    compute_hash,
    hash_matches,
    stored_bytes,
)
from mint.eventlog.port import Metadata, build_envelopes
from mint.v1.events_pb2 import EventEnvelope


def _sealed() -> EventEnvelope:
    moves = [ev.ChannelMoved("latest", 1, 0)]
    return build_envelopes("acme/tone", 0, b"", moves, Metadata("alice", "r1"))[0]


def test_new_events_hash_the_bytes_the_log_stores() -> None:
    envelope = _sealed()
    stored = stored_bytes(envelope)
    assert envelope.hash_format == HASH_OVER_STORED_BYTES
    assert EventEnvelope.FromString(stored) == envelope
    assert hashlib.sha256(stored[:-34]).digest() == envelope.hash  # all but the hash field
    assert hash_matches(EventEnvelope.FromString(stored), stored)


def test_a_changed_stored_byte_is_caught_even_where_parsing_hides_it() -> None:
    envelope = _sealed()
    stored = stored_bytes(envelope)
    # The same envelope again, appended: protobuf parses it to the same message, so a
    # re-serializing verifier would see nothing; the stored bytes differ.
    padded = stored[:-34] + stored[:-34] + stored[-34:]
    assert EventEnvelope.FromString(padded) == envelope
    assert compute_hash(EventEnvelope.FromString(padded)) == envelope.hash
    assert not hash_matches(EventEnvelope.FromString(padded), padded)
    flipped = bytearray(stored)
    flipped[5] ^= 1
    assert not hash_matches(EventEnvelope.FromString(bytes(stored)), bytes(flipped))


def test_bytes_another_writer_ordered_differently_verify_as_stored() -> None:
    """A writer whose protobuf orders fields otherwise (or keeps fields this reader does
    not know) wrote bytes a re-serialization would not reproduce: they verify as stored."""
    envelope = _sealed()
    first = EventEnvelope(payload=envelope.payload, request_id=envelope.request_id)
    rest = EventEnvelope()
    rest.CopyFrom(envelope)
    rest.ClearField("hash")
    rest.ClearField("payload")
    rest.ClearField("request_id")
    body = first.SerializeToString() + rest.SerializeToString()  # payload first
    digest = hashlib.sha256(body).digest()
    stored = body + bytes([0x5A, 32]) + digest
    parsed = EventEnvelope.FromString(stored)
    assert compute_hash(parsed) != digest  # re-serialized, the bytes differ
    assert hash_matches(parsed, stored)
    assert StreamChain().check(parsed, "offset 0", stored) == []


def test_events_of_format_0_still_verify() -> None:
    legacy = _sealed()
    legacy.ClearField("hash_format")
    legacy.hash = compute_hash(legacy)  # how every event was sealed before format 1
    stored = legacy.SerializeToString()  # and how it was stored: hash in field order
    parsed = EventEnvelope.FromString(stored)
    assert parsed.hash_format == 0
    assert StreamChain().check(parsed, "offset 0", stored) == []
    parsed.actor = "mallory"
    assert not hash_matches(parsed, stored)
