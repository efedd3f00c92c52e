"""The EventLog contract against the embedded SQLite back end."""

from __future__ import annotations

from pathlib import Path

import pytest

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
