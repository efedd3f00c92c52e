"""The clients' pure parts: every status code's exception, adapter selectors, where a
rollback goes, and a watch reconnecting from its offsets (a stand-in stream: what is
checked is the watch, not a server)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest

import mint
from mint.client import Event, Selector, errors
from mint.client.build import parse_ref, selectors
from mint.client.retry import PUSHBACK_METADATA
from mint.client.rollback import rollback_target
from mint.client.watch import Watch, scan
from mint.domain.events import ChannelMoved
from mint.v1 import registry_pb2 as pb

EXPECTED = {
    grpc.StatusCode.NOT_FOUND: mint.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: mint.AlreadyExists,
    grpc.StatusCode.ABORTED: mint.Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: mint.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: mint.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: mint.Unauthenticated,
    grpc.StatusCode.INVALID_ARGUMENT: mint.InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: mint.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: mint.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: mint.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.DATA_LOSS: errors.DataLoss,
}


class Status(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str | None = "what the server said"):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_status_code_becomes_its_exception_with_the_message(code: grpc.StatusCode) -> None:
    error = errors.from_rpc_error(Status(code), request_id="r-1")
    assert type(error) is EXPECTED.get(code, mint.MintError)
    assert (error.code, error.message, str(error), error.request_id) == (
        code,
        "what the server said",
        "what the server said",
        "r-1",
    )
    assert error.retryable == (
        code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    )


def test_a_status_without_details_is_named() -> None:
    assert errors.from_rpc_error(Status(grpc.StatusCode.INTERNAL, None)).message == "INTERNAL"


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        ("acme/tone", Selector("acme/tone")),
        ("acme/tone@stable", Selector("acme/tone", channel="stable")),
        ("acme/tone@12", Selector("acme/tone", revision=12)),
    ],
)
def test_a_selector_names_a_channel_or_a_revision(text: str, selector: Selector) -> None:
    assert Selector.parse(text) == selector


@pytest.mark.parametrize("text", ["tone", "acme/tone@", "acme/tone@a@b", "acme/to ne"])
def test_a_selector_that_names_no_adapter_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="tenant/name@channel"):
        Selector.parse(text)


def test_selectors_stack_with_their_weights() -> None:
    wire = selectors(["acme/a@stable", Selector("acme/b", revision=3, weight=0.5)])
    assert [(s.adapter, s.WhichOneof("at"), s.HasField("weight")) for s in wire] == [
        ("acme/a", "channel", False),
        ("acme/b", "revision", True),
    ]
    assert wire[1].weight == 0.5
    with pytest.raises(ValueError, match="not both"):
        Selector("acme/a", channel="stable", revision=1)


def _moved(version: int, payload: ChannelMoved) -> Event:
    at = datetime.now(UTC)
    return Event(0, version, "", "", "acme/a", version, at, "", "", "", "", "", payload)


def test_a_rollback_goes_where_the_channel_was_before_its_last_move() -> None:
    history = [
        _moved(1, ChannelMoved("stable", 1, 0)),
        _moved(2, ChannelMoved("latest", 3, 2)),
        _moved(3, ChannelMoved("stable", 2, 1)),
        _moved(4, ChannelMoved("latest", 4, 3)),
    ]
    assert rollback_target("acme/a", "stable", history) == (1, 4)
    with pytest.raises(mint.FailedPrecondition, match="unset before its last move"):
        rollback_target("acme/a", "stable", history[:1])
    with pytest.raises(mint.FailedPrecondition, match="never moved"):
        rollback_target("acme/a", "beta", history)


def test_a_rollback_sent_again_goes_where_it_went_the_first_time() -> None:
    """Its own move is the channel's last now: the history before it decides, so the
    registry sees the same command (a retry), not another one under a used request id."""
    history = [
        _moved(1, ChannelMoved("stable", 1, 0)),
        _moved(2, ChannelMoved("stable", 2, 1)),
        replace(_moved(3, ChannelMoved("stable", 1, 2)), request_id="rollback-1"),
    ]
    assert rollback_target("acme/a", "stable", history[:2], "rollback-1") == (1, 2)
    assert rollback_target("acme/a", "stable", history, "rollback-1") == (1, 2)
    assert rollback_target("acme/a", "stable", history, "another") == (2, 3)


class Stream:
    """Yields its events, then fails with `code` (or ends)."""

    def __init__(self, events: list[pb.RecordedEvent], code: grpc.StatusCode | None) -> None:
        self.events, self.code, self.cancelled = iter(events), code, False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> pb.RecordedEvent:
        for event in self.events:
            return event
        if self.code is None:
            raise StopIteration
        raise Status(self.code)

    def cancel(self) -> None:
        self.cancelled = True


def _recorded(partition: int, offset: int) -> pb.RecordedEvent:
    recorded = pb.RecordedEvent(partition=partition, offset=offset)
    recorded.envelope.stream_id = "acme/a"
    recorded.envelope.event_type = "mint.v1.SomethingNewer"  # unknown here: no payload
    return recorded


def test_a_watch_reconnects_from_its_offsets_after_a_retryable_failure() -> None:
    opened: list[dict[int, int]] = []
    streams = iter(
        [
            Stream([_recorded(0, 5), _recorded(1, 2)], grpc.StatusCode.UNAVAILABLE),
            Stream([_recorded(0, 6)], grpc.StatusCode.PERMISSION_DENIED),
        ]
    )

    def open_stream(offsets: dict[int, int]) -> Stream:
        opened.append(dict(offsets))
        return next(streams)

    watch = Watch(open_stream, {0: 5}, retry_for_s=5)
    seen = [(next(watch).offset), next(watch).offset, next(watch).offset]
    with pytest.raises(mint.PermissionDenied):
        next(watch)
    assert seen == [5, 2, 6]
    assert opened == [{0: 5}, {0: 6, 1: 3}]
    assert watch.offsets == {0: 7, 1: 3}


class Busy(Status):
    """A refusal for now, with a pushback, as a registry whose watch slots are taken
    sends it."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, "4 watches are open; retry later")

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return ((PUSHBACK_METADATA, "200"),)


class BusyStream(Stream):
    def __next__(self) -> pb.RecordedEvent:
        raise Busy()


def test_a_watch_refused_for_now_waits_out_the_pushback_and_opens_again() -> None:
    streams = iter([BusyStream([], None), Stream([_recorded(0, 0)], None)])
    watch = Watch(lambda _: next(streams), None, retry_for_s=5)
    started = time.monotonic()
    assert next(watch).offset == 0
    assert time.monotonic() - started >= 0.2


def test_a_closed_watch_ends_and_cancels_its_stream() -> None:
    stream = Stream([_recorded(0, 0)], None)
    watch = Watch(lambda _: stream, None, retry_for_s=5)
    with watch:
        assert next(watch).payload is None  # a type this client does not know
    assert stream.cancelled
    assert list(watch) == []


def test_a_scan_resumes_from_its_offsets_and_ends_with_the_stream() -> None:
    opened: list[dict[int, int]] = []
    streams = iter(
        [
            Stream([_recorded(0, 5), _recorded(1, 2)], grpc.StatusCode.UNAVAILABLE),
            Stream([_recorded(0, 6)], None),  # the server read to the end: the stream ends
        ]
    )

    def open_stream(offsets: dict[int, int]) -> Stream:
        opened.append(dict(offsets))
        return next(streams)

    records = list(scan(open_stream, retry_for_s=5))
    assert [(r.position.partition, r.position.offset) for r in records] == [(0, 5), (1, 2), (0, 6)]
    assert records[0].envelope.stream_id == "acme/a"  # the envelope whole, as stored
    assert opened == [{}, {0: 6, 1: 3}]


@pytest.mark.parametrize("text", ["acme", "acme/", "/tone", ""])
def test_a_ref_without_tenant_and_name_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("write TENANT/NAME, e.g. acme/tone")):
        parse_ref(text)
    assert (parse_ref("acme/tone").tenant, parse_ref("acme/tone").name) == ("acme", "tone")
