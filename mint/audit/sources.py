"""Where the audit reads from, checked before it reads: a topic or bucket that does not
exist would otherwise read as an empty, clean log or as every file missing (and opening
a blob store or a writable log creates what is missing). The records are decoded here,
not in the back ends' readers, which stop at the first that is no event: such a record
is named and the reading goes on (records.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mint.domain.errors import InvalidArgument, NotFound, Unavailable
from mint.eventlog.port import Position
from mint.settings import option

from .records import LogRecord, decoded

if TYPE_CHECKING:
    from minio import Minio

    from mint.backends.kafka import KafkaConnection


@dataclass(frozen=True)
class LogSource:
    """The log's records, read from the start to its end as of each call to `read`."""

    partitions: int  # positions name partitions 0 .. partitions - 1
    read: Callable[[], Iterator[LogRecord]]


def kafka_source(kafka: KafkaConnection, topic: str, partitions: int) -> LogSource:
    """The events topic, read-only (nothing is created); it must exist."""
    require_topic(kafka, topic, partitions)
    return LogSource(partitions, lambda: _kafka_records(kafka, topic, partitions))


def embedded_source(path: Path) -> LogSource:
    """The embedded back end's SQLite file (SqliteEventLog's), opened read-only."""
    if not path.is_file():
        raise NotFound(f"no embedded log at {path}: check --data-dir")
    return LogSource(1, lambda: _embedded_records(path))


def require_topic(kafka: KafkaConnection, topic: str, partitions: int) -> None:
    """Raise unless the events topic exists with `partitions` partitions."""
    from mint.backends.kafka import topic_partitions

    try:
        actual = topic_partitions(kafka, topic)
    except ValueError:
        raise NotFound(
            f"the events topic {topic} does not exist at {kafka.bootstrap}: check "
            f"{option('events_topic')}"
        ) from None
    if actual != partitions:
        raise InvalidArgument(
            f"the events topic {topic} has {actual} partitions, not {partitions}: "
            f"give {option('events_partitions')} {actual}"
        )


def require_bucket(s3: Minio, bucket: str, setting: str) -> None:
    """Raise unless `bucket` (given as the setting named) exists; a bucket this
    principal may not ask about is left to the reads to judge."""
    from minio.error import S3Error

    from mint.backends.s3 import unavailable_on_failure

    try:
        with unavailable_on_failure(f"asking for bucket {bucket}"):
            exists = s3.bucket_exists(bucket)
    except S3Error:
        return
    if not exists:
        raise NotFound(f"bucket {bucket} does not exist: check {option(setting)}")


def check_offsets(offsets: dict[int, int], partitions: int) -> None:
    """Raise unless every partition named is one of the log's."""
    unknown = sorted(p for p in offsets if not 0 <= p < partitions)
    if unknown:
        raise InvalidArgument(
            f"--as-of-offsets: the log has partitions 0..{partitions - 1}, not "
            f"{', '.join(map(str, unknown))}"
        )


def _kafka_records(kafka: KafkaConnection, topic: str, partitions: int) -> Iterator[LogRecord]:
    from kafka.errors import KafkaError

    from mint.backends.kafka_reader import read_records

    try:
        for record in read_records(kafka, topic, dict.fromkeys(range(partitions), 0)):
            yield decoded(record.value, Position(record.partition, record.offset))
    except KafkaError as exc:
        raise Unavailable(
            f"Kafka failed while reading topic {topic} ({type(exc).__name__}): check that "
            "its brokers are up, then run the audit again"
        ) from exc


def _embedded_records(path: Path) -> Iterator[LogRecord]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT position, envelope FROM events ORDER BY position")
        for position, value in rows:
            yield decoded(value, Position(0, position))
    except sqlite3.DatabaseError as exc:
        raise NotFound(f"{path} holds no embedded event log ({exc}): check --data-dir") from exc
    finally:
        db.close()
