"""What the audit makes of a log someone wrote into directly, against the real Kafka and
S3: records that are no event, an event of a stream never created, an event appended
again and a new event reusing an old one's id are each named by position while the rest
is still checked (verify) or folded (replay, provenance); and a wrong target (a topic,
bucket or partition that does not exist) is one error line, never an empty, clean log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from minio import Minio

from mint.audit import provenance, replay, verify
from mint.audit.__main__ import main
from mint.audit.event_ids import EventIds
from mint.audit.sources import kafka_source
from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain import events as ev
from mint.domain.names import AdapterRef
from mint.eventlog.chain import seal, stored_bytes
from mint.eventlog.port import EventLog, Metadata, Position, Recorded, build_envelopes
from tests.keys import kek_file

TONE, OTHER, GHOST = "acme/tone", "acme/other", "acme/ghost"


def _created(stream: str) -> ev.AdapterCreated:
    tenant, name = stream.split("/")
    return ev.AdapterCreated(uuid.uuid4().hex, tenant, name, "alice", "f" * 64, "lora", {})


def _gate(channel: str) -> ev.ChannelGateSet:
    return ev.ChannelGateSet(channel, "safety")  # refers to no revision and no blob


def _append(log: EventLog, stream: str, version: int, events: list[ev.Event]) -> None:
    log.append(stream, version, events, Metadata("alice", uuid.uuid4().hex))


def _send(kafka: KafkaConnection, topic: str, partition: int, value: bytes | None) -> Position:
    """Write a record as someone with write access to the topic could, past the registry."""
    producer = durable_producer(kafka)
    try:
        sent = producer.send(topic, key=b"x", value=value, partition=partition).get(timeout=30)
    finally:
        producer.close()
    return Position(sent.partition, sent.offset)


@pytest.fixture(scope="module")
def tampered(kafka: KafkaConnection, s3: Minio) -> Iterator[dict]:
    """acme/tone's events around a record of garbage, an empty record and an event of
    acme/ghost, a stream never created; acme/other after them."""
    topic = f"bad-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(topic)  # the blobs bucket verify reads (no revision: no blob)
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    _append(log, TONE, 0, [_created(TONE), _gate("stable")])
    garbage = _send(kafka, topic, 0, b"\xff\xff\xff not an envelope")
    empty = _send(kafka, topic, 1, None)
    (forged,) = build_envelopes(
        GHOST, 0, b"", [ev.ChannelMoved("stable", 1, 0)], Metadata("mallory", "r")
    )
    ghost = _send(kafka, topic, 1, stored_bytes(forged))
    _append(log, TONE, 2, [_gate("canary")])  # after the bad records: still checked
    _append(log, OTHER, 0, [_created(OTHER)])
    log.close()
    yield {"topic": topic, "kafka": kafka, "garbage": garbage, "empty": empty, "ghost": ghost}


@pytest.fixture(autouse=True)
def _environment(
    endpoints: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in endpoints.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MINT_KEK_FILE", str(kek_file(tmp_path)))


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`python -m mint.audit ARGS` in this process: a traceback fails the test."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _on(topic: str, *more: str) -> list[str]:
    return ["--events-topic", topic, "--events-partitions", "2", *more]


def _problems(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("PROBLEM"))


def _expected_problems(tampered: dict) -> list[str]:
    return sorted(
        [
            f"PROBLEM {tampered['garbage']}: undecodable record (not an event envelope: "
            "Error parsing message with type 'mint.v1.EventEnvelope': Wire format was corrupt)",
            f"PROBLEM {tampered['empty']}: undecodable record (the record is empty)",
            f"PROBLEM {GHOST} v1 at {tampered['ghost']}: event for a stream that was never "
            "created (ChannelMoved with no AdapterCreated before it)",
        ]
    )


def test_verify_names_each_bad_record_and_checks_the_rest(
    tampered: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = tampered["topic"]
    status, out, err = _audit(capsys, "verify", *_on(topic, "--blobs-bucket", topic))
    assert status == 1, out + err
    assert _problems(out) == _expected_problems(tampered), out
    assert "5 events in 3 streams" in out  # tone's 3, other's and ghost's: read past them


def test_replay_and_provenance_leave_bad_records_out_and_say_so(
    tampered: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _audit(capsys, "replay", *_on(tampered["topic"]))
    assert status == 1, out + err
    assert _problems(err) == _expected_problems(tampered), err
    assert "3 records left out" in err
    assert TONE in out and OTHER in out and GHOST not in out
    assert "2 adapters, 0 base models, 4 events" in out

    status, out, err = _audit(capsys, "provenance", TONE, *_on(tampered["topic"]))
    assert status == 1, out + err  # a record that is no event may have been one of tone's
    not_the_ghosts = [p for p in _expected_problems(tampered) if GHOST not in p]
    assert _problems(err) == not_the_ghosts, err
    assert out.startswith(f"{TONE}  (id ") and "owner alice" in out


def test_without_a_taker_replay_and_provenance_refuse_the_first_bad_event(
    tampered: dict,
) -> None:
    """What the `mint` command calls, over the events alone (the registry serves no
    record that is not one): one ValueError naming the event, which it prints as such."""
    events = [
        r
        for r in kafka_source(tampered["kafka"], tampered["topic"], 2).read()
        if isinstance(r, Recorded)
    ]
    never_created = f"{GHOST} v1 at {tampered['ghost']}: event for a stream that was never created"
    with pytest.raises(ValueError, match=never_created):
        replay.replay(events)
    with pytest.raises(ValueError, match=never_created):
        provenance.lineage(events, AdapterRef.parse(GHOST))


def test_an_event_appended_again_and_a_reused_event_id_are_named(
    kafka: KafkaConnection, unique: str
) -> None:
    log = KafkaEventLog(kafka, unique, partitions=2, txn_prefix=unique)
    _append(log, TONE, 0, [_created(TONE), _gate("stable"), _gate("canary")])
    first, second, third = list(log.read_all())
    partition = first.position.partition
    copy = _send(kafka, unique, partition, second.stored)  # the same bytes, again
    (reusing,) = build_envelopes(
        TONE, 3, third.envelope.hash, [_gate("beta")], Metadata("mallory", "r")
    )
    reusing.event_id = first.envelope.event_id  # and chained correctly all the same
    reused = _send(kafka, unique, partition, stored_bytes(seal(reusing, third.envelope.hash)))

    report = verify.verify(log.read_all())
    log.close()
    assert [str(p) for p in report.problems] == [
        f"{TONE} v2 at {copy}: repeats the event at {second.position} (the same event "
        "appended again)",
        f"{TONE} v4 at {reused}: reuses the event id {first.envelope.event_id} of the event "
        f"at {first.position}",
    ]


def test_an_embedded_log_is_read_past_a_bad_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    _append(log, TONE, 0, [_created(TONE)])
    log._connect().execute(
        "INSERT INTO events (stream_id, version, request_id, envelope) "
        "VALUES ('x', 1, 'r', X'FFFFFF')"
    )
    _append(log, TONE, 1, [_gate("stable")])
    log.close()
    embedded = ["--backend", "embedded", "--data-dir", str(tmp_path)]
    status, out, _ = _audit(capsys, "verify", *embedded)
    assert status == 1
    assert _problems(out) == [
        "PROBLEM partition 0 offset 2: undecodable record (not an event envelope: Error "
        "parsing message with type 'mint.v1.EventEnvelope': Wire format was corrupt)"
    ]
    assert "2 events in 1 streams" in out
    status, out, _ = _audit(capsys, "replay", *embedded)
    assert status == 1 and "1 adapters, 0 base models, 2 events" in out


def _topics(kafka: KafkaConnection) -> set[str]:
    admin = KafkaAdminClient(**kafka.options())
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_an_events_topic_that_does_not_exist_is_an_error_and_is_not_created(
    kafka: KafkaConnection, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["verify", "--blobs-bucket", unique], ["replay"]):
        status, out, err = _audit(capsys, *command, *_on(unique))
        assert (status, out) == (2, ""), out
        assert err.startswith(f"error: the events topic {unique} does not exist at "), err
        assert len(err.splitlines()) == 1
    assert unique not in _topics(kafka)


@pytest.fixture
def empty(kafka: KafkaConnection, s3: Minio) -> str:
    """An events topic nothing was written to, and a blobs bucket of the same name."""
    name = f"empty-{uuid.uuid4().hex[:8]}"
    create_log_topic(kafka, name, 2, 1)
    s3.make_bucket(name)
    return name


def test_a_bucket_that_does_not_exist_is_an_error_and_is_not_created(
    empty: str, s3: Minio, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = empty
    for command, setting in (
        (["verify", *_on(topic, "--blobs-bucket", unique)], "blobs-bucket or MINT_BLOBS"),
        (
            ["verify", *_on(topic, "--blobs-bucket", topic, "--projection-bucket", unique)],
            "projection-bucket or MINT_PROJECTION",
        ),
        (["gc", "--dry-run", *_on(topic, "--blobs-bucket", unique)], "blobs-bucket or MINT_BLOBS"),
    ):
        status, out, err = _audit(capsys, *command)
        assert (status, out) == (2, ""), out
        assert err == f"error: bucket {unique} does not exist: check --{setting}_BUCKET\n"
    assert not s3.bucket_exists(unique)


def test_replay_refuses_a_partition_the_topic_does_not_have(
    empty: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _on(empty, "--as-of-offsets", "0:3,77:1")
    status, out, err = _audit(capsys, "replay", *args)
    assert (status, out) == (2, "")
    assert err == "error: --as-of-offsets: the log has partitions 0..1, not 77\n"


def test_an_empty_log_is_not_called_clean(empty: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _audit(capsys, "verify", *_on(empty, "--blobs-bucket", empty))
    assert status == 0  # nothing is wrong: nothing was written yet
    assert out.endswith("0 erasures: no events, nothing to check\n"), out


def test_event_ids_are_found_again_however_many_are_noted() -> None:
    ids = EventIds(slots=8)  # grows many times over
    ids_and_hashes = [(uuid.uuid4().hex, uuid.uuid4().bytes) for _ in range(5000)]
    for offset, (event_id, event_hash) in enumerate(ids_and_hashes):
        assert ids.note(event_id, event_hash, Position(offset % 3, offset)) is None
    assert len(ids) == 5000
    for offset, (event_id, event_hash) in enumerate(ids_and_hashes):
        seen = ids.note(event_id, event_hash, Position(9, 0))
        assert seen is not None and seen.position == Position(offset % 3, offset)
        assert seen.same_event
    reused = ids.note(ids_and_hashes[7][0], b"another event", Position(9, 0))
    assert reused is not None and not reused.same_event and reused.position.offset == 7
