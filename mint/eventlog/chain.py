"""Envelopes and the per-stream hash chain that makes tampering detectable.

hash = sha256(deterministic protobuf bytes of the envelope with `hash` cleared); the
envelope includes `prev_hash`, so altering, dropping or reordering any event of a stream
breaks the chain at that event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from mint.v1.events_pb2 import EventEnvelope


def compute_hash(envelope: EventEnvelope) -> bytes:
    unsealed = EventEnvelope()
    unsealed.CopyFrom(envelope)
    unsealed.ClearField("hash")
    return hashlib.sha256(unsealed.SerializeToString(deterministic=True)).digest()


def seal(envelope: EventEnvelope, prev_hash: bytes) -> EventEnvelope:
    """Set prev_hash and hash in place; return the envelope."""
    envelope.prev_hash = prev_hash
    envelope.hash = compute_hash(envelope)
    return envelope


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

    def check(self, envelope: EventEnvelope, where: str) -> list[ChainProblem]:
        """Problems of the stream's next envelope, at `where` in the log."""
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
        if compute_hash(envelope) != envelope.hash:
            report("hash does not match the event's contents (altered)")
        self.expected_version, self.prev_hash = envelope.stream_version + 1, envelope.hash
        return problems


def verify_stream(entries: Iterable[tuple[EventEnvelope, str]]) -> list[ChainProblem]:
    """Check one stream's envelopes, in log order, each with its position in the log."""
    chain = StreamChain()
    return [problem for envelope, where in entries for problem in chain.check(envelope, where)]
