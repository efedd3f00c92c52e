"""Signed checkpoints of the embedded log: a table in its SQLite file, beside the events
(one partition, 0, whose offsets are the events' row ids)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    partition  INTEGER NOT NULL,
    signed     BLOB    NOT NULL
);
"""


class SqliteCheckpointStore:
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._local = threading.local()
        self._connect().executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def append(self, partition: int, signed: bytes) -> None:
        self._connect().execute(
            "INSERT INTO checkpoints (partition, signed) VALUES (?, ?)", (partition, signed)
        )

    def last(self, partition: int) -> bytes | None:
        row = (
            self._connect()
            .execute(
                "SELECT signed FROM checkpoints WHERE partition=? ORDER BY position DESC LIMIT 1",
                (partition,),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def read_all(self) -> Iterator[tuple[int, str, bytes]]:
        rows = self._connect().execute(
            "SELECT position, partition, signed FROM checkpoints ORDER BY position"
        )
        for position, partition, signed in rows.fetchall():
            yield int(partition), f"checkpoints row {position}", bytes(signed)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
