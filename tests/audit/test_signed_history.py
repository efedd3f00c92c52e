"""Signed checkpoints against the real Kafka: a registry log signed by the checkpoint
signer, then copied record by record into new topics (events and checkpoints) with one
change each, as someone able to rewrite the log would leave it. `mint-audit verify
--public-key` passes the untouched log and an untouched copy, and names what is wrong
with a log rewritten with recomputed hash chains, one with a stream's last events cut
off, and one with a whole stream deleted, none of which the hash chain alone shows."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from minio import Minio

from mint.audit.__main__ import main
from mint.backends.kafka import KafkaConnection, create_log_topic, durable_producer
from mint.backends.kafka_checkpoints import KafkaCheckpointStore, checkpoint_topic
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_reader import read_records
from mint.backends.s3 import ensure_bucket
from mint.backends.sqlite_checkpoints import SqliteCheckpointStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain import events as ev
from mint.eventlog.chain import seal, stored_bytes
from mint.eventlog.port import EventLog, Metadata
from mint.eventlog.signer import CheckpointSigner
from mint.v1.events_pb2 import EventEnvelope
from tests.audit.signing import new_key
from tests.keys import kek_file

TONE = "acme/tone"
BLOBS = "mint"
Record = tuple[int, bytes | None, bytes]  # partition, key, value


def _append(log: EventLog, stream: str, version: int, n: int) -> int:
    events: list[ev.Event] = []
    if version == 0:
        events.append(ev.AdapterCreated(stream, "acme", stream[5:], "alice", "f" * 64, "lora", {}))
    events += [ev.ChannelMoved("latest", version + i, 0) for i in range(len(events), n)]
    log.append(stream, version, events, Metadata("alice", uuid.uuid4().hex))
    return version + n


def _write_history(log: EventLog, sign: Callable[[], int]) -> None:
    """acme/tone gets 13 events, signed in two checkpoint rounds; two other streams."""
    tone = _append(log, TONE, 0, 6)
    _append(log, "acme/other", 0, 2)
    _append(log, "acme/third", 0, 3)
    assert sign() >= 1
    tone = _append(log, TONE, tone, 4)
    _append(log, TONE, tone, 3)
    assert sign() >= 1


@pytest.fixture(scope="module")
def signed(kafka: KafkaConnection, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    topic = f"signed-{uuid.uuid4().hex[:8]}"
    key, public = new_key(tmp_path_factory.mktemp("keys"))
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    store = KafkaCheckpointStore(kafka, topic, 2)
    signer = CheckpointSigner(key, store, log.read_partition, lambda: range(2), "test")
    _write_history(log, signer.sign_once)
    store.close()
    log.close()
    yield {"topic": topic, "public": public, "kafka": kafka}


@pytest.fixture(autouse=True)
def _kek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify opens the blobs it checks: with the KEK they were sealed with."""
    monkeypatch.setenv("MINT_KEK_FILE", str(kek_file(tmp_path)))


@pytest.fixture(scope="module", autouse=True)
def _blobs_bucket(s3: Minio) -> None:
    """verify's blobs bucket must exist (these logs reference no blob)."""
    ensure_bucket(s3, BLOBS)


def _verify(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    endpoints: dict[str, str],
    topic: str,
    *keys: Path,
) -> tuple[int, str]:
    for name, value in endpoints.items():
        monkeypatch.setenv(name, value)
    options = ["--events-topic", topic, "--events-partitions", "2", "--blobs-bucket", BLOBS]
    status = main(["verify", *options, *(a for k in keys for a in ("--public-key", str(k)))])
    return status, capsys.readouterr().out


def _read(kafka: KafkaConnection, topic: str) -> list[Record]:
    return [(r.partition, r.key, r.value) for r in read_records(kafka, topic, {0: 0, 1: 0})]


Change = Callable[[list[Record]], list[Record]]


def _copy(kafka: KafkaConnection, source: str, change: Change) -> str:
    """Copy the events (changed) and the checkpoints (as they are) into new topics."""
    target = f"{source}-{uuid.uuid4().hex[:6]}"
    producer = durable_producer(kafka)
    for name, records in (
        (target, change(_read(kafka, source))),
        (checkpoint_topic(target), _read(kafka, checkpoint_topic(source))),
    ):
        create_log_topic(kafka, name, 2, 1)
        for partition, key, value in records:
            producer.send(name, key=key, value=value, partition=partition)
    producer.flush()
    producer.close()
    return target


def _version(record: Record) -> int:
    return EventEnvelope.FromString(record[2]).stream_version


def _untouched(records: list[Record]) -> list[Record]:
    return records


def _rewritten(records: list[Record]) -> list[Record]:
    """acme/tone's 4th event altered, and its chain recomputed from there on."""
    out, prev = [], b""
    for partition, key, value in records:
        envelope = EventEnvelope.FromString(value)
        if envelope.stream_id == TONE and envelope.stream_version >= 4:
            if envelope.stream_version == 4:
                envelope.actor = "mallory"
            value = stored_bytes(seal(envelope, prev))
        if envelope.stream_id == TONE:
            prev = envelope.hash
        out.append((partition, key, value))
    return out


def _truncated(records: list[Record]) -> list[Record]:
    return [r for r in records if r[1] != TONE.encode() or _version(r) <= 10]


def _deleted(records: list[Record]) -> list[Record]:
    return [r for r in records if r[1] != TONE.encode()]


def test_the_signed_log_and_an_untouched_copy_verify(
    signed: dict, endpoints: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    status, out = _verify(monkeypatch, capsys, endpoints, signed["topic"], signed["public"])
    assert status == 0, out
    assert "3 streams vouched for" in out and "clean" in out
    copy = _copy(signed["kafka"], signed["topic"], _untouched)
    status, out = _verify(monkeypatch, capsys, endpoints, copy, signed["public"])
    assert status == 0, out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_rewritten, ["the log's v13 has hash", "the log was rewritten after it was signed"]),
        (_truncated, ["the stream ends at v10", "its last 3 events were removed"]),
        (_deleted, ["the stream is not in the log", "the whole stream was deleted"]),
    ],
    ids=["rewritten", "truncated", "deleted"],
)
def test_a_changed_history_fails_verify_naming_what_changed(
    signed: dict,
    endpoints: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    change: Change,
    says: list[str],
) -> None:
    copy = _copy(signed["kafka"], signed["topic"], change)
    status, out = _verify(monkeypatch, capsys, endpoints, copy)  # the chains alone: fine
    assert status == 0, out
    status, out = _verify(monkeypatch, capsys, endpoints, copy, signed["public"])
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM")]
    assert status == 1 and len(problems) == 1, out
    assert problems[0].startswith(f"PROBLEM {TONE} v13 at checkpoint 2 of partition "), out
    partition = problems[0].split(" of partition ")[1].split(":")[0]
    signed_by = f"but checkpoint 2 of partition {partition} signed v13"
    assert all(text in problems[0] for text in [*says, signed_by]), problems[0]


def test_a_key_the_verifier_was_not_given_is_named(
    signed: dict,
    endpoints: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _, other = new_key(tmp_path, "other")
    status, out = _verify(monkeypatch, capsys, endpoints, signed["topic"], other)
    assert status == 1
    assert "not by a key given to the verifier" in out, out
    assert "has events but no signed checkpoint" in out  # none of them counts


def test_the_embedded_log_signs_and_verifies_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    key, public = new_key(tmp_path)
    log = SqliteEventLog(tmp_path / "events.db")
    store = SqliteCheckpointStore(tmp_path / "events.db")
    signer = CheckpointSigner(key, store, log.read_partition, lambda: (0,), "embedded")
    _write_history(log, signer.sign_once)
    embedded = ["verify", "--backend", "embedded", "--data-dir", str(tmp_path)]
    assert main([*embedded, "--public-key", str(public)]) == 0, capsys.readouterr().out
    db = log._connect()
    db.execute("DELETE FROM events WHERE stream_id = ?", (TONE,))
    log.close()
    store.close()
    assert main([*embedded, "--public-key", str(public)]) == 1
    assert "the whole stream was deleted" in capsys.readouterr().out
