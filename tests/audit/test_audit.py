"""Audits from the log alone, against the real Kafka and S3: a clean log verifies; an
altered, a dropped and a reordered event, and a corrupted blob, are each named; replay
as of a checkpoint equals what the registry reported then; provenance explains lineage."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.dom import minidom

import pytest
from kafka import KafkaConsumer, KafkaProducer
from minio import Minio

from mint.audit import provenance, replay, verify
from mint.backends.kafka import KafkaConnection, create_log_topic
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.blobs.port import blob_key
from mint.domain.names import AdapterRef
from mint.eventlog.port import next_checkpoint
from mint.registry import Principal, Registry
from mint.v1.events_pb2 import EventEnvelope
from streams.projector.runner import rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK, kek_file

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def audited(kafka: KafkaConnection, s3: Minio, model_files: dict) -> Iterator[dict]:
    topic = f"audit-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    moments = []  # (checkpoint after a command, the adapter the registry reported)
    steps = [
        lambda: registry.create_adapter(ALICE, REF, model_files["fingerprint"], rid()),
        lambda: registry.publish_revision(
            ALICE, REF, model_files["upload"], rid(), training_run_id="run-1"
        ),
        lambda: registry.record_evaluation(ALICE, REF, 1, "safety", {"acc": 0.9}, True, rid()),
        lambda: registry.move_channel(ALICE, REF, "stable", 1, rid(), reason="promote"),
        lambda: registry.publish_revision(
            ALICE, REF, model_files["upload"], rid(), parents=(1,), training_run_id="run-2"
        ),
    ]
    for step in steps:
        outcome = step()
        checkpoint: dict[int, int] = {}
        for r in log.read_all():
            checkpoint = next_checkpoint(checkpoint, r)
        moments.append((checkpoint, outcome.adapter))
    registry.create_adapter(ALICE, AdapterRef("acme", "other"), model_files["fingerprint"], rid())
    yield {"topic": topic, "log": log, "s3": s3, "moments": moments, "kafka": kafka}
    log.close()


def _copy(kafka: KafkaConnection, source: str, tamper: str, target: str = "") -> KafkaEventLog:
    """A copy of the topic with one tampering applied to acme/tone's 4th event."""
    target = target or f"{source}-{tamper}"
    create_log_topic(kafka, target, 2, 1)
    consumer = KafkaConsumer(
        **kafka.options(),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    consumer.subscribe([source])
    records = sorted(consumer, key=lambda m: (m.partition, m.offset))
    consumer.close()
    tone = [m for m in records if m.key == str(REF).encode()]
    victim = tone[3]  # the 4th event of acme/tone: version 4
    producer = KafkaProducer(**kafka.options(), acks="all")
    out = list(records)
    if tamper == "altered":
        envelope = EventEnvelope.FromString(victim.value)
        envelope.actor = "mallory"
        out[out.index(victim)] = victim._replace(value=envelope.SerializeToString())
    elif tamper == "dropped":
        out.remove(victim)
    elif tamper == "reordered":
        i = out.index(victim)
        out[i], out[i + 1] = out[i + 1], out[i]
    for m in out:
        producer.send(target, key=m.key, value=m.value, partition=m.partition)
    producer.flush()
    producer.close()
    return KafkaEventLog(kafka, target, partitions=2, owned=())


def test_untampered_log_verifies_clean(audited: dict) -> None:
    report = verify.verify(
        audited["log"].read_all(), S3BlobStore(audited["s3"], audited["topic"], TEST_KEK)
    )
    assert report.clean, report.problems
    assert (report.streams, report.blobs_checked) == (3, 1)  # base, tone, other; 1 blob


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("altered", "v4 at partition {p} offset {o}: hash does not match"),
        ("dropped", "v5 at partition {p} offset {o}: version 5 where 4 was expected"),
        ("reordered", "v5 at partition {p} offset {o}: version 5 where 4 was expected"),
    ],
)
def test_tampering_is_named_to_the_event(audited: dict, tamper: str, expected: str) -> None:
    copy = _copy(audited["kafka"], audited["topic"], tamper)
    report = verify.verify(copy.read_all())
    copy.close()
    tone = [p for p in report.problems if p.stream_id == str(REF)]
    assert tone, f"{tamper} went unnoticed"
    first = tone[0]
    partition, offset = first.position.split(" offset ")
    text = f"v{first.stream_version} at {first.position}: {first.problem}"
    assert text.startswith(expected.format(p=partition.split()[-1], o=offset)), text
    assert not [p for p in report.problems if p.stream_id != str(REF)]


def test_corrupted_blob_is_named(audited: dict, model_files: dict) -> None:
    s3, bucket = audited["s3"], audited["topic"]
    adapter = audited["moments"][1][1]
    sha = adapter.revision(1).weights_sha256
    key = blob_key(adapter.adapter_id, sha)
    original = s3.get_object(bucket, key).read()
    broken = original[:-1] + bytes([original[-1] ^ 1])
    s3.put_object(bucket, key, io.BytesIO(broken), len(broken))
    try:
        report = verify.verify(audited["log"].read_all(), S3BlobStore(s3, bucket, TEST_KEK))
    finally:
        s3.put_object(bucket, key, io.BytesIO(original), len(original))
    texts = [f"{p.stream_id} v{p.stream_version}: {p.problem}" for p in report.problems]
    assert (
        f"acme/tone v2: blob {sha} is corrupt: its bytes do not match the recorded sha256" in texts
    )
    assert "acme/tone v6" in " ".join(texts)  # revision 2 reuses the same blob


def test_corrupted_projection_copy_is_named(
    audited: dict, endpoints: dict[str, str], unique: str, tmp_path: Path
) -> None:
    """Only the projection's copy is damaged (the registry's blob is intact): verify
    given the projection names the file, from the API and the command line."""
    s3, topic = audited["s3"], audited["topic"]
    rebuild(audited["log"], S3Sink(s3, unique, blobs_bucket=topic, prefix="p/", kek=TEST_KEK))
    projection = S3Objects(s3, unique, "p/")
    blobs = S3BlobStore(s3, topic, TEST_KEK)
    clean = verify.verify(audited["log"].read_all(), blobs, projection)
    assert clean.clean, clean.problems
    assert clean.projection_files_checked == 4  # weights and config of revisions 1 and 2

    key = "p/adapters/acme/tone/revisions/2/adapter_model.safetensors"
    original = s3.get_object(unique, key).read()
    damaged = bytes(len(original))  # same size, other bytes
    s3.put_object(unique, key, io.BytesIO(damaged), len(damaged))
    report = verify.verify(audited["log"].read_all(), blobs, projection)
    texts = [f"{p.stream_id} v{p.stream_version}: {p.problem}" for p in report.problems]
    assert len(texts) == 1, texts
    assert texts[0].startswith(
        "acme/tone v6: projection's adapters/acme/tone/revisions/2/adapter_model.safetensors "
        "differs from the log"
    ), texts

    options = ["--events-topic", topic, "--events-partitions", "2", "--blobs-bucket", topic]
    options += ["--kek-file", str(kek_file(tmp_path))]
    projection_options = ["--projection-bucket", unique, "--projection-prefix", "p/"]
    result = subprocess.run(
        [sys.executable, "-m", "mint.audit", "verify", *options, *projection_options],
        capture_output=True,
        text=True,
        env={**os.environ, **endpoints},
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEM acme/tone v6" in result.stdout and "4 projection files" in result.stdout


def test_replay_as_of_checkpoints_matches_what_the_registry_reported(audited: dict) -> None:
    for checkpoint, reported in audited["moments"]:
        state = replay.replay(audited["log"].read_all(), until_offsets=checkpoint)
        assert state.adapters[str(REF)] == reported


def test_provenance_lineage_text_json_and_svg(audited: dict, tmp_path: Path) -> None:
    doc = provenance.lineage(audited["log"].read_all(), REF)
    assert sorted(doc["revisions"]) == [1, 2]
    assert doc["revisions"][2]["parents"] == [1]
    assert doc["revisions"][1]["evaluations"][0]["suite"] == "safety"
    assert [c["channel"] for c in doc["revisions"][1]["channels"]] == ["latest", "stable"]
    assert "run-2" in provenance.to_text(doc)
    svg = provenance.to_svg(doc)
    minidom.parseString(svg)  # well-formed
    assert svg.count("<rect") == 2 and "marker-end" in svg
    only_1 = provenance.lineage(audited["log"].read_all(), REF, revision=1)
    assert sorted(only_1["revisions"]) == [1]


def test_cli_exit_status(audited: dict, endpoints: dict[str, str], tmp_path: Path) -> None:
    kek = kek_file(tmp_path)

    def cli(command: str, *args: str, topic: str) -> subprocess.CompletedProcess[str]:
        options = ["--events-topic", topic, "--events-partitions", "2"]
        if command == "verify":
            options += ["--blobs-bucket", audited["topic"], "--kek-file", str(kek)]
        return subprocess.run(
            [sys.executable, "-m", "mint.audit", command, *args, *options],
            capture_output=True,
            text=True,
            env={**os.environ, **endpoints},
            timeout=120,
        )

    clean = cli("verify", topic=audited["topic"])
    assert clean.returncode == 0 and "clean" in clean.stdout, clean.stderr
    target = f"{audited['topic']}-cli"
    _copy(audited["kafka"], audited["topic"], "dropped", target).close()
    broken = cli("verify", topic=target)
    assert broken.returncode == 1 and "PROBLEM acme/tone v5" in broken.stdout
    svg = tmp_path / "lineage.svg"
    shown = cli("provenance", "acme/tone@2", "--svg", str(svg), topic=audited["topic"])
    assert shown.returncode == 0 and "revision 2" in shown.stdout and svg.exists()
