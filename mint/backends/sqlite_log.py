"""The embedded event log: one SQLite file, for laptops and demos with no servers.

SQLite gives what Kafka lacks, a conditional append: the version check and the insert run
in one IMMEDIATE transaction, and UNIQUE constraints back both the version order and the
request-id deduplication, so several processes may share one file safely.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf.message import DecodeError

from mint.domain.errors import VersionConflict
from mint.domain.events import Event
from mint.eventlog.chain import stored_bytes
from mint.eventlog.port import (
    AppendResult,
    Checkpoint,
    EventLog,
    Metadata,
    OnForeign,
    Position,
    Recorded,
    build_envelopes,
    next_checkpoint,
)
from mint.v1.events_pb2 import EventEnvelope

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    request_id  TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_by_request ON events (stream_id, request_id);
"""


class SqliteEventLog(EventLog):
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged event survives a crash
            self._local.db = db
        return db

    def check_writable(self, stream_id: str) -> None:
        return None  # one file, one writer: always writable

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = self._append_locked(db, stream_id, expected_version, events, meta)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # never leave this connection holding the lock
            raise
        return result

    def _append_locked(
        self,
        db: sqlite3.Connection,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        meta: Metadata,
    ) -> AppendResult:
        earlier = db.execute(
            "SELECT min(version), max(version) FROM events WHERE stream_id=? AND request_id=?",
            (stream_id, meta.request_id),
        ).fetchone()
        if earlier[0] is not None:
            return AppendResult(stream_id, earlier[0], earlier[1], duplicate=True)
        tail = db.execute(
            "SELECT version, envelope FROM events WHERE stream_id=? ORDER BY version DESC LIMIT 1",
            (stream_id,),
        ).fetchone()
        current, prev_hash = (tail[0], EventEnvelope.FromString(tail[1]).hash) if tail else (0, b"")
        if current != expected_version:
            raise VersionConflict(
                f"stream {stream_id} is at version {current}, not {expected_version}: "
                "re-read it and retry"
            )
        envelopes = build_envelopes(stream_id, expected_version, prev_hash, events, meta)
        db.executemany(
            "INSERT INTO events (stream_id, version, request_id, envelope) VALUES (?, ?, ?, ?)",
            [(stream_id, e.stream_version, meta.request_id, stored_bytes(e)) for e in envelopes],
        )
        return AppendResult(stream_id, expected_version + 1, expected_version + len(events))

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[Recorded]:
        rows = self._connect().execute(
            "SELECT position, envelope FROM events WHERE stream_id=? AND version>? "
            "ORDER BY version",
            (stream_id, after_version),
        )
        return [_recorded(position, blob) for position, blob in rows]

    def read_all(
        self, after: Checkpoint | None = None, on_foreign: OnForeign | None = None
    ) -> Iterator[Recorded]:
        start = (after or {}).get(0, 0)  # next offset to read; offsets are rowids
        end = self._end()
        rows = (
            self._connect()
            .execute(
                "SELECT position, envelope FROM events WHERE position >= ? AND position <= ? "
                "ORDER BY position",
                (start, end),
            )
            .fetchall()
        )
        for position, blob in rows:
            try:
                recorded = _recorded(position, blob)
            except DecodeError as exc:
                if on_foreign is None:
                    raise
                on_foreign(0, position, f"no event envelope: {exc}")
                continue
            yield recorded

    def subscribe(self, after: Checkpoint | None, idle_timeout_s: float) -> Iterator[Recorded]:
        checkpoint = dict(after or {})
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_timeout_s:
            got = False
            for recorded in self.read_all(checkpoint):
                checkpoint = next_checkpoint(checkpoint, recorded)
                got = True
                yield recorded
            if got:
                idle_since = time.monotonic()
            else:
                time.sleep(0.05)

    def _end(self) -> int:
        row = self._connect().execute("SELECT max(position) FROM events").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _recorded(position: int, blob: bytes) -> Recorded:
    return Recorded(EventEnvelope.FromString(blob), Position(0, position), blob)
