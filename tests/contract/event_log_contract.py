"""The EventLog contract, written once; each back end subclasses it with a factory."""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator

import pytest

from mint.domain.errors import VersionConflict
from mint.domain.events import AdapterArchived, ChannelMoved
from mint.eventlog.chain import verify_stream
from mint.eventlog.port import EventLog, Metadata, next_checkpoint


def meta(request_id: str | None = None) -> Metadata:
    return Metadata(actor="alice", request_id=request_id or uuid.uuid4().hex)


def moves(*revisions: int) -> list[ChannelMoved]:
    return [ChannelMoved("latest", r, r - 1) for r in revisions]


class EventLogContract(ABC):
    @abstractmethod
    def make_log(self) -> EventLog:
        """A fresh, empty log (a new file, a new topic)."""

    @abstractmethod
    def reopen(self, log: EventLog) -> EventLog:
        """A second instance over the same storage, as after a restart."""

    @pytest.fixture
    def log(self) -> Iterator[EventLog]:
        log = self.make_log()
        yield log
        log.close()

    @pytest.fixture
    def stream(self) -> str:
        return f"tenant/s-{uuid.uuid4().hex[:8]}"

    def test_append_and_read_back_in_order(self, log: EventLog, stream: str) -> None:
        first = log.append(stream, 0, moves(1, 2), meta())
        second = log.append(stream, 2, moves(3), meta())
        assert (first.first_version, first.last_version) == (1, 2)
        assert (second.first_version, second.last_version, second.duplicate) == (3, 3, False)
        recorded = log.read_stream(stream)
        assert [r.envelope.stream_version for r in recorded] == [1, 2, 3]
        assert [r.event for r in recorded] == moves(1, 2, 3)
        assert {r.envelope.actor for r in recorded} == {"alice"}
        assert verify_stream((r.envelope, str(r.position)) for r in recorded) == []

    def test_read_stream_after_a_version(self, log: EventLog, stream: str) -> None:
        log.append(stream, 0, moves(1, 2, 3), meta())
        assert [r.event for r in log.read_stream(stream, after_version=1)] == moves(2, 3)
        assert log.read_stream(stream, after_version=3) == []

    def test_unknown_stream_reads_empty(self, log: EventLog) -> None:
        assert log.read_stream("tenant/never-written") == []

    def test_stale_expected_version_appends_nothing(self, log: EventLog, stream: str) -> None:
        log.append(stream, 0, moves(1), meta())
        for stale in (0, 2, 5):
            with pytest.raises(VersionConflict, match="re-read"):
                log.append(stream, stale, [AdapterArchived("no")], meta())
        assert [r.event for r in log.read_stream(stream)] == moves(1)

    def test_retry_with_same_request_id_returns_first_result(
        self, log: EventLog, stream: str
    ) -> None:
        first = log.append(stream, 0, moves(1, 2), meta("req-1"))
        retry = log.append(stream, 0, moves(1, 2), meta("req-1"))  # stale version too
        assert retry.duplicate
        assert (retry.first_version, retry.last_version) == (first.first_version, 2)
        assert len(log.read_stream(stream)) == 2

    def test_streams_are_independent(self, log: EventLog) -> None:
        a, b = f"t/a-{uuid.uuid4().hex[:6]}", f"t/b-{uuid.uuid4().hex[:6]}"
        for i in range(1, 4):
            log.append(a, i - 1, moves(i), meta())
            log.append(b, i - 1, moves(10 + i), meta())
        assert [r.event for r in log.read_stream(a)] == moves(1, 2, 3)
        assert [r.event for r in log.read_stream(b)] == moves(11, 12, 13)

    def test_read_all_from_a_checkpoint(self, log: EventLog, stream: str) -> None:
        log.append(stream, 0, moves(1, 2), meta())
        everything = [r for r in log.read_all() if r.envelope.stream_id == stream]
        assert len(everything) == 2
        checkpoint = next_checkpoint(None, everything[-1])
        log.append(stream, 2, moves(3), meta())
        later = [r.event for r in log.read_all(checkpoint) if r.envelope.stream_id == stream]
        assert later == moves(3)

    def test_subscribe_sees_events_appended_later(self, log: EventLog, stream: str) -> None:
        log.append(stream, 0, moves(1), meta())
        start: dict[int, int] = {}
        for r in log.read_all():
            start = next_checkpoint(start, r)
        seen: list[int] = []

        def consume() -> None:
            for r in log.subscribe(start, idle_timeout_s=5):
                if r.envelope.stream_id == stream:
                    seen.append(r.envelope.stream_version)
                    if len(seen) == 2:
                        return

        reader = threading.Thread(target=consume)
        reader.start()
        log.append(stream, 1, moves(2), meta())
        log.append(stream, 2, moves(3), meta())
        reader.join(timeout=30)
        assert seen == [2, 3]

    def test_concurrent_writers_never_share_a_version(self, log: EventLog, stream: str) -> None:
        """Writers race for the same versions; each version is won exactly once."""
        wins: list[int] = []
        lock = threading.Lock()

        def writer() -> None:
            for _ in range(15):
                current = len(log.read_stream(stream))
                try:
                    result = log.append(stream, current, moves(current + 1), meta())
                except VersionConflict:
                    continue
                with lock:
                    wins.append(result.first_version)

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        versions = [r.envelope.stream_version for r in log.read_stream(stream)]
        assert sorted(wins) == versions == list(range(1, len(versions) + 1))
        assert verify_stream((r.envelope, str(r.position)) for r in log.read_stream(stream)) == []

    def test_state_survives_reopening(self, log: EventLog, stream: str) -> None:
        log.append(stream, 0, moves(1), meta("req-a"))
        again = self.reopen(log)
        try:
            assert again.append(stream, 0, moves(1), meta("req-a")).duplicate
            with pytest.raises(VersionConflict):
                again.append(stream, 0, moves(1), meta())
            again.append(stream, 1, moves(2), meta())
            recorded = again.read_stream(stream)
            assert [r.envelope.stream_version for r in recorded] == [1, 2]
            assert verify_stream((r.envelope, str(r.position)) for r in recorded) == []
        finally:
            again.close()
