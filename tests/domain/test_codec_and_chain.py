"""Protobuf codec (with upcasting) and the hash chain (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mint.domain import events as ev
from mint.domain.errors import InvalidArgument
from mint.eventlog import codec
from mint.eventlog.chain import verify_stream
from mint.eventlog.port import Metadata, build_envelopes
from mint.v1 import legacy_pb2
from mint.v1.events_pb2 import EventEnvelope

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROV = ev.Provenance("alice", "run-9", ("ds-a", "ds-b"), {"lr": "2e-4"}, {"torch": "2.4"})

ALL_EVENTS: list[ev.Event] = [
    ev.AdapterCreated("id-1", "acme", "tone", "alice", "f" * 64, "lora", {"team": "x"}),
    ev.RevisionPublished(3, "a" * 64, 1234, '{"r": 8}', PROV, (1, 2)),
    ev.EvaluationRecorded(3, "safety", {"acc": 0.91, "loss": 1.5}, "ds-e", "bob", True),
    ev.ChannelGateSet("stable", "safety"),
    ev.ChannelMoved("stable", 3, 2, "promote"),
    ev.AdapterArchived("erasure request"),
    ev.UpdateRequested("u-1", "feedback", "c" * 64, 321, "stable"),
    ev.UpdateFinished("u-1", 4, "held", "evaluation did not improve"),
    ev.BaseModelRegistered("tiny", "b" * 64, {"layer.weight": (64, 64), "bias": (64,)}),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: ev.Event) -> None:
    event_type, version, payload = codec.encode(event)
    assert event_type == f"mint.v1.{type(event).__name__}"
    assert codec.decode(event_type, version, payload) == event


def test_v1_revision_event_from_the_log_is_upcast() -> None:
    """A RevisionPublished written with schema 1 (single `parent`) still reads, forever."""
    stored = EventEnvelope.FromString((FIXTURES / "revision_published_v1.envelope").read_bytes())
    assert (stored.event_type, stored.schema_version) == ("mint.v1.RevisionPublished", 1)
    event = codec.decode(stored.event_type, stored.schema_version, stored.payload)
    assert isinstance(event, ev.RevisionPublished)
    assert event.parents == (1,)
    assert (event.revision, event.weights_size) == (2, 4096)
    assert event.weights_sha256 == "c" * 64


def test_fixture_is_what_schema_1_wrote() -> None:
    """Guard the fixture itself: it parses as the legacy message, not the current one."""
    stored = EventEnvelope.FromString((FIXTURES / "revision_published_v1.envelope").read_bytes())
    assert legacy_pb2.RevisionPublishedV1.FromString(stored.payload).parent == 1


def test_unknown_type_or_version_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown event type"):
        codec.decode("mint.v1.Nope", 1, b"")
    with pytest.raises(InvalidArgument, match="version 9"):
        codec.decode("mint.v1.ChannelMoved", 9, b"")


def _chain(n: int) -> list[EventEnvelope]:
    moves = [ev.ChannelMoved("latest", i, i - 1) for i in range(1, n + 1)]
    return build_envelopes("acme/tone", 0, b"", moves, Metadata("alice", "r1"))


def _problems(envelopes: list[EventEnvelope]) -> list[str]:
    return [
        f"v{p.stream_version}@{p.position}: {p.problem}"
        for p in verify_stream((e, f"offset {i}") for i, e in enumerate(envelopes))
    ]


def test_intact_chain_verifies() -> None:
    assert _problems(_chain(5)) == []


def test_altered_event_is_named() -> None:
    chain = _chain(5)
    chain[2].actor = "mallory"
    assert _problems(chain) == ["v3@offset 2: hash does not match the event's contents (altered)"]


def test_dropped_event_is_named() -> None:
    chain = _chain(5)
    del chain[1]
    problems = _problems(chain)
    assert problems[0].startswith("v3@offset 1: version 3 where 2 was expected")
    assert any("prev_hash" in p for p in problems)


def test_reordered_pair_is_named() -> None:
    chain = _chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    problems = _problems(chain)
    assert problems[0].startswith("v3@offset 1: version 3 where 2 was expected")
