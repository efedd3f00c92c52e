"""The log as the audit reads it: every record, an event or what could not be read as one.

The audit exists to find tampering, so a record that is no event envelope (garbage, an
empty value) must not stop it: it is an `Unreadable` naming its partition and offset
(sources.py reads the log so), a problem verify reports like any other. Replay and
provenance refuse such a record, or an event they cannot fold, with `Unfoldable`, unless
their caller takes what they leave out (`Skip`): `mint-audit` lists it and goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mint.eventlog import codec
from mint.eventlog.chain import ChainProblem
from mint.eventlog.port import Position, Recorded
from mint.v1.events_pb2 import EventEnvelope

CREATIONS = codec.CREATIONS  # the event types a stream may begin with


class RecordProblem(ChainProblem):
    """A problem of a record that is no event: of no stream, named by its position."""

    def __str__(self) -> str:
        return f"{self.position}: {self.problem}"


@dataclass(frozen=True)
class Unreadable:
    """A record of the log that is no event: not an envelope, or an empty one."""

    position: Position
    reason: str

    def problem(self) -> ChainProblem:
        return RecordProblem("", 0, str(self.position), f"undecodable record ({self.reason})")


LogRecord = Recorded | Unreadable
Skip = Callable[[ChainProblem], None]  # takes a record left out, and why


class Unfoldable(ValueError):
    """A record that replay or provenance cannot fold (a ValueError: bad input, as the
    `mint` command reports it)."""

    def __init__(self, problem: ChainProblem) -> None:
        super().__init__(f"{problem}: the log was altered (audit verify names every such record)")
        self.problem = problem


def left_out(problem: ChainProblem, skip: Skip | None) -> None:
    """Hand the problem to `skip`, or, with none, raise it."""
    if skip is None:
        raise Unfoldable(problem)
    skip(problem)


def decoded(value: bytes | None, position: Position) -> LogRecord:
    """The record's event, or why it is none."""
    if not value:
        return Unreadable(position, "the record is empty")
    try:
        envelope = EventEnvelope.FromString(value)
    except DecodeError as exc:
        return Unreadable(position, f"not an event envelope: {exc}")
    if not envelope.stream_id:  # protobuf reads many a garbage as an envelope of nothing
        return Unreadable(position, "an envelope that names no stream")
    return Recorded(envelope, position, value)


def problem_at(r: Recorded, text: str) -> ChainProblem:
    """A problem of the event `r`, named by its stream, version and position."""
    e = r.envelope
    return ChainProblem(e.stream_id, e.stream_version, str(r.position), text)


def never_created(r: Recorded) -> ChainProblem:
    """The problem of an event whose stream has no creation before it."""
    kind = r.envelope.event_type.rsplit(".", 1)[-1]
    return problem_at(
        r, f"event for a stream that was never created ({kind} with no AdapterCreated before it)"
    )
