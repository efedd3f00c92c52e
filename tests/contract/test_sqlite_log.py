"""The EventLog contract against the embedded SQLite back end."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from mint.backends.sqlite_log import SqliteEventLog
from mint.eventlog.port import EventLog
from tests.contract.event_log_contract import EventLogContract


class TestSqliteEventLog(EventLogContract):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    def make_log(self) -> EventLog:
        return SqliteEventLog(self.path)

    def reopen(self, log: EventLog) -> EventLog:
        return SqliteEventLog(self.path)


def test_a_row_that_is_no_envelope_is_skipped_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SqliteEventLog(path)
    with sqlite3.connect(path) as db:  # written by something other than the log
        db.execute(
            "INSERT INTO events (stream_id, version, request_id, envelope) VALUES (?, ?, ?, ?)",
            ("x/y", 1, "r", b"\xff\x00not an envelope"),
        )
    with pytest.raises(DecodeError):
        list(log.read_all())
    told: list[tuple[int, int, str]] = []
    assert list(log.read_all(on_foreign=lambda *why: told.append(why))) == []
    assert [(partition, position) for partition, position, _ in told] == [(0, 1)]
    assert "no event envelope" in told[0][2]
