"""Snapshots on the real broker: a new owner loads them instead of replaying the log,
and falls back to the log, with the same state, when they are missing, stale or corrupt."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from mint.backends import kafka_reader, kafka_rewrites, kafka_transaction, kafka_writer
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_reader import read_records
from mint.backends.kafka_snapshots import snapshot_topic
from mint.domain.errors import FailedPrecondition
from mint.domain.events import AdapterCreated, ChannelMoved, Provenance, RevisionPublished
from mint.eventlog.port import StreamState, build_envelopes
from mint.eventlog.snapshots import SUMMARY_KEY
from tests.contract.event_log_contract import meta

STREAMS = [f"acme/a{i}" for i in range(5)]


def _history(i: int) -> list[list[Any]]:
    """Commands on one adapter: create, publish, publish, and moves of a channel."""
    sha = f"{i:064x}"
    return [
        [AdapterCreated(f"id-{i}", "acme", f"a{i}", "alice", "f" * 64, "lora", {"k": "v"})],
        [RevisionPublished(1, sha, 10, "{}", Provenance("alice")), ChannelMoved("latest", 1, 0)],
        [RevisionPublished(2, sha, 10, "{}", Provenance("alice")), ChannelMoved("latest", 2, 1)],
        *[[ChannelMoved("stable", 1 + k % 2, k % 2)] for k in range(4)],
    ]


class Owners:
    """Opens owners of one fresh topic one after another (each fences the one before)
    and records where each began reading the events."""

    def __init__(self, kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kafka, self.topic = kafka, f"events-{uuid.uuid4().hex[:10]}"
        self.prefix = f"txn-{uuid.uuid4().hex[:8]}"
        self.read_from: list[int] = []
        self.current: KafkaEventLog | None = None
        real = kafka_reader.read_partitions

        def recording(kafka: KafkaConnection, topic: str, start: dict[int, int], **kw: Any) -> Any:
            self.read_from.append(start[0])
            return real(kafka, topic, start, **kw)

        monkeypatch.setattr(kafka_writer, "read_partitions", recording)

    def next(self) -> KafkaEventLog:
        if self.current is not None:
            self.current.close()
        self.read_from.clear()
        self.current = KafkaEventLog(self.kafka, self.topic, partitions=1, txn_prefix=self.prefix)
        return self.current

    def table(self) -> dict[bytes, bytes]:
        table: dict[bytes, bytes] = {}
        for r in read_records(self.kafka, snapshot_topic(self.topic), {0: 0}, stall_s=20):
            if r.value is None:
                table.pop(r.key, None)
            else:
                table[r.key] = r.value
        return table

    def write(self, key: bytes, value: bytes | None) -> None:
        producer = KafkaProducer(**self.kafka.options(), acks="all")
        producer.send(snapshot_topic(self.topic), key=key, value=value, partition=0).get(10)
        producer.close()


@pytest.fixture
def owners(kafka: KafkaConnection, monkeypatch: pytest.MonkeyPatch) -> Iterator[Owners]:
    made = Owners(kafka, monkeypatch)
    yield made
    if made.current is not None:
        made.current.close()


def _fill(log: KafkaEventLog) -> dict[str, StreamState | None]:
    for i, stream in enumerate(STREAMS):
        for version, events in enumerate(_history(i)):
            log.append(
                stream,
                sum(len(e) for e in _history(i)[:version]),
                events,
                meta(f"{stream}-{version}"),
            )
    return {s: StreamState.of(log.read_stream(s)) for s in STREAMS}


def _same_state(log: KafkaEventLog, expected: dict[str, StreamState | None]) -> None:
    for stream, whole in expected.items():
        state = log.read_state(stream)
        assert state is not None and whole is not None
        assert (state.version, state.last_event_id, state.requests) == (
            whole.version,
            whole.last_event_id,
            whole.requests,
        )
        assert len(state.events) < len(whole.events)  # compacted, not the history
        assert [r.envelope.stream_version for r in log.read_stream(stream)] == list(
            range(1, whole.version + 1)
        )


def test_a_new_owner_loads_the_snapshots_and_reads_only_the_events_after_them(
    owners: Owners,
) -> None:
    expected = _fill(owners.next())
    log = owners.next()
    # From just after the second-to-last transaction (a summary cannot know its own
    # transaction's offsets): the last event is read again, none before it.
    *_, before_last, last = sorted(r.position.offset for r in log.read_all())
    assert len(owners.read_from) == 1 and before_last < owners.read_from[0] <= last
    _same_state(log, expected)
    # A retry of a request the first owner applied finds its first result.
    again = log.append(STREAMS[0], 0, _history(0)[0], meta(f"{STREAMS[0]}-0"))
    assert again.duplicate and (again.first_version, again.last_version) == (1, 1)


Damage = Callable[[Owners, dict[bytes, bytes], dict[bytes, bytes]], None]


def _tombstone(owners: Owners, before: dict[bytes, bytes], now: dict[bytes, bytes]) -> None:
    owners.write(STREAMS[1].encode(), None)


def _stale(owners: Owners, before: dict[bytes, bytes], now: dict[bytes, bytes]) -> None:
    owners.write(STREAMS[2].encode(), before[STREAMS[2].encode()])


def _corrupt(owners: Owners, before: dict[bytes, bytes], now: dict[bytes, bytes]) -> None:
    owners.write(STREAMS[3].encode(), b"\x0a\xff garbage")


def _extra(owners: Owners, before: dict[bytes, bytes], now: dict[bytes, bytes]) -> None:
    owners.write(b"acme/never-created", now[STREAMS[0].encode()])


def _no_summary(owners: Owners, before: dict[bytes, bytes], now: dict[bytes, bytes]) -> None:
    owners.write(SUMMARY_KEY, None)


@pytest.mark.parametrize("damage", [_tombstone, _stale, _corrupt, _extra, _no_summary])
def test_damaged_snapshots_fall_back_to_the_log_and_are_written_again(
    owners: Owners, damage: Damage
) -> None:
    first = owners.next()
    first.append(STREAMS[2], 0, _history(2)[0], meta())
    before = owners.table()  # STREAMS[2] at version 1: stale once it moves on
    first.append(STREAMS[2], 1, _history(2)[1], meta())
    expected = _fill_rest(first)
    damage(owners, before, owners.table())
    log = owners.next()
    assert owners.read_from == [0]  # the whole log, not the damaged snapshots
    _same_state(log, expected)
    log.append(STREAMS[4], expected[STREAMS[4]].version, [ChannelMoved("x", 1, 0)], meta())  # type: ignore[union-attr]
    expected[STREAMS[4]] = StreamState.of(log.read_stream(STREAMS[4]))
    after = owners.next()  # the fallback wrote them all again: whole and current
    assert owners.read_from != [0]
    assert b"acme/never-created" not in owners.table()
    _same_state(after, expected)


def _fill_rest(log: KafkaEventLog) -> dict[str, StreamState | None]:
    for i, stream in enumerate(STREAMS):
        done = len(log.read_stream(stream))
        version = 0
        for k, events in enumerate(_history(i)):
            if version >= done:
                log.append(stream, version, events, meta(f"{stream}-{k}"))
            version += len(events)
    return {s: StreamState.of(log.read_stream(s)) for s in STREAMS}


def test_a_large_rewrite_spans_transactions_and_holds_once_whole(
    owners: Owners, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_rewrites, "REWRITE_CHUNK", 2)  # 5 streams: three transactions
    expected = _fill(owners.next())
    owners.write(SUMMARY_KEY, None)
    log = owners.next()
    assert owners.read_from == [0]
    deadline = time.monotonic() + 30
    while log.writer._rewrite and time.monotonic() < deadline:  # written in the background
        time.sleep(0.1)
    assert not log.writer._rewrite
    after = owners.next()
    assert owners.read_from != [0]
    _same_state(after, expected)


def test_a_take_that_fails_after_reading_the_log_still_writes_the_snapshots(
    owners: Owners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10^6 adapters a replica's first take read a partition from its start, then
    failed (another partition's transaction had failed meanwhile); the take that then
    succeeded, from the state the failed one kept, no longer knew the snapshots were due,
    and no replica after it could start from them."""
    expected = _fill(owners.next())
    owners.write(SUMMARY_KEY, None)  # no valid snapshots: a new owner reads the log
    owners.current.close()  # type: ignore[union-attr]
    owners.current = log = KafkaEventLog(
        owners.kafka, owners.topic, partitions=1, txn_prefix=owners.prefix, owned=()
    )
    reading = vars(kafka_writer)["read_partitions"]  # the recording one (Owners)
    failures = iter([RuntimeError("the broker went away")])

    def failing_once(*args: Any, **kw: Any) -> Any:
        records = list(reading(*args, **kw))
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return records

    monkeypatch.setattr(kafka_writer, "read_partitions", failing_once)
    with pytest.raises(RuntimeError, match="went away"):
        log.take(0)
    log.take(0)  # (or the writer's own retake got there first)
    deadline = time.monotonic() + 30
    while (log.writer._rewrite or log.writer._owed) and time.monotonic() < deadline:
        time.sleep(0.1)  # written in the background
    assert not log.writer._rewrite and not log.writer._owed
    after = owners.next()
    assert owners.read_from and owners.read_from != [0]  # from the snapshots the retake wrote
    _same_state(after, expected)


def test_a_stream_outgrowing_a_snapshot_is_refused_alone(
    owners: Owners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot is one record: a stream whose snapshot would outgrow it has its command
    refused, and the replica goes on (no failed transaction, no partition taken again)."""
    monkeypatch.setattr(kafka_transaction, "MAX_SNAPSHOT_BYTES", 1500)
    log = owners.next()
    writer_id = log.writer.transactional_id
    version = 0
    with pytest.raises(FailedPrecondition, match="archive it and go on in a new adapter"):
        for _ in range(100):  # each command adds a request id to the snapshot
            log.append(STREAMS[0], version, [ChannelMoved("x", 1, 0)], meta())
            version += 1
    assert 0 < version < 100
    log.append(STREAMS[1], 0, [ChannelMoved("x", 1, 0)], meta())  # others go on
    assert log.writer.transactional_id == writer_id and log.owned() == {0}
    assert [r.envelope.stream_version for r in log.read_stream(STREAMS[0])][-1] == version


def test_records_no_registry_wrote_are_left_out_and_do_not_stop_a_take(
    owners: Owners, caplog: pytest.LogCaptureFixture
) -> None:
    """Anything with write access to the topic could append them; the next owner must
    still take the partition, with the state the registries wrote."""
    expected = _fill(owners.next())
    head = expected[STREAMS[0]]
    assert head is not None
    ghost = build_envelopes("acme/ghost", 6, b"", [ChannelMoved("stable", 1, 0)], meta())
    broken = build_envelopes(STREAMS[0], head.version, b"not the head", _history(0)[3], meta())
    producer = KafkaProducer(**owners.kafka.options(), acks="all")
    forged = (ghost[0], broken[0])
    for value in (b"\x00no envelope", *(e.SerializeToString() for e in forged)):
        producer.send(owners.topic, value=value, partition=0).get(10)
    producer.close()
    with caplog.at_level(logging.ERROR, logger="mint.backends"):
        log = owners.next()
        state = log.read_state(STREAMS[0])
    assert log.read_state("acme/ghost") is None
    assert state is not None and state.version == head.version
    later = log.append(STREAMS[0], head.version, _history(0)[3], meta("after-the-forgeries"))
    assert later.first_version == head.version + 1
    assert sum("was written by no registry" in r.getMessage() for r in caplog.records) == 3
