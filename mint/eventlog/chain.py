"""Envelopes and the per-stream hash chain that makes tampering detectable.

The envelope includes `prev_hash`, so altering, dropping or reordering any event of a
stream breaks the chain at that event. How `hash` is computed is the envelope's
`hash_format` (an explicit version, so old logs stay verifiable forever):
- 0 (events written before 2026-12-02): sha256 of the deterministic serialization of the
  envelope with `hash` cleared. A verifier re-serializes what it parsed, so its answer
  depends on its protobuf library agreeing with the writer's, byte for byte.
- 1 (`HASH_OVER_STORED_BYTES`): sha256 of the exact bytes stored in the log before the
  trailing `hash` field. The writer serializes the envelope without its hash once,
  hashes those bytes, and stores them followed by the encoded `hash` field (protobuf
  accepts fields in any order); a verifier hashes what it read, never a re-serialization.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from mint.v1.events_pb2 import EventEnvelope

HASH_OVER_STORED_BYTES = 1
# The encoded `hash` field (number 11, length-delimited, 32 bytes) that ends a stored
# envelope of format 1: its tag, its length, then the digest.
_HASH_TAG = bytes([(EventEnvelope.HASH_FIELD_NUMBER << 3) | 2, 32])
_TRAILER = len(_HASH_TAG) + 32


def _unsealed_bytes(envelope: EventEnvelope) -> bytes:
    unsealed = EventEnvelope()
    unsealed.CopyFrom(envelope)
    unsealed.ClearField("hash")
    return unsealed.SerializeToString(deterministic=True)


def compute_hash(envelope: EventEnvelope) -> bytes:
    """The hash of a parsed envelope (its bytes re-serialized without the hash)."""
    return hashlib.sha256(_unsealed_bytes(envelope)).digest()


Head = tuple[int, bytes]  # a stream's last version and hash; (0, b"") before its first
NO_EVENTS: Head = (0, b"")


def follows(envelope: EventEnvelope, head: Head) -> bool:
    """Whether `envelope` carries on the stream whose head is `head`: the next version,
    linked to that head. What a writer of the log appends always does; a record anything
    else appended may not."""
    version, last_hash = head
    return envelope.stream_version == version + 1 and envelope.prev_hash == last_hash


def seal(envelope: EventEnvelope, prev_hash: bytes) -> EventEnvelope:
    """Set prev_hash, hash_format and hash in place; return the envelope."""
    envelope.prev_hash = prev_hash
    envelope.hash_format = HASH_OVER_STORED_BYTES
    envelope.hash = compute_hash(envelope)
    return envelope


def stored_bytes(envelope: EventEnvelope) -> bytes:
    """What the log stores for a sealed envelope: for format 1, exactly the bytes its hash
    covers, then the hash field."""
    if envelope.hash_format != HASH_OVER_STORED_BYTES:
        return envelope.SerializeToString()
    return _unsealed_bytes(envelope) + _HASH_TAG + envelope.hash


def hash_matches(envelope: EventEnvelope, stored: bytes = b"") -> bool:
    """Whether the envelope's hash covers it: the bytes read from the log (`stored`) for
    format 1, else (format 0, or no stored bytes at hand) its re-serialization."""
    if envelope.hash_format != HASH_OVER_STORED_BYTES or not stored:
        return compute_hash(envelope) == envelope.hash
    body, trailer = stored[:-_TRAILER], stored[-_TRAILER:]
    return trailer == _HASH_TAG + envelope.hash and hashlib.sha256(body).digest() == envelope.hash


@dataclass(frozen=True)
class ChainProblem:
    stream_id: str
    stream_version: int
    position: str  # where in the log, e.g. "partition 0 offset 17"
    problem: str

    def __str__(self) -> str:
        return f"{self.stream_id} v{self.stream_version} at {self.position}: {self.problem}"


@dataclass(slots=True)
class StreamChain:
    """One stream's chain, checked an envelope at a time in log order: all a verifier
    keeps per stream, so checking a log holds no event once it is checked."""

    expected_version: int = 1
    prev_hash: bytes = b""

    def check(self, envelope: EventEnvelope, where: str, stored: bytes = b"") -> list[ChainProblem]:
        """Problems of the stream's next envelope, at `where` in the log (`stored`: its
        bytes as read, when the log gives them)."""
        problems = []

        def report(text: str) -> None:
            problems.append(ChainProblem(envelope.stream_id, envelope.stream_version, where, text))

        if envelope.stream_version != self.expected_version:
            report(
                f"version {envelope.stream_version} where {self.expected_version} was expected "
                "(an event is missing or out of order)"
            )
        if envelope.prev_hash != self.prev_hash:
            report("prev_hash does not match the previous event's hash")
        if not hash_matches(envelope, stored):
            report("hash does not match the event's contents (altered)")
        self.expected_version, self.prev_hash = envelope.stream_version + 1, envelope.hash
        return problems


def verify_stream(entries: Iterable[tuple[EventEnvelope, str]]) -> list[ChainProblem]:
    """Check one stream's envelopes, in log order, each with its position in the log."""
    chain = StreamChain()
    return [problem for envelope, where in entries for problem in chain.check(envelope, where)]
