"""Erasure by crypto-shredding, against the real Kafka and S3: after EraseAdapter no
stored copy of the adapter's weights opens (blob store, projection, a rebuild of it), the
other adapters are untouched, the log's chains still verify and the audit names who
erased what, when and where; an erasure interrupted after its tombstone is finished by
the sweep; later calls say the adapter was erased."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from mint.audit import verify
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_residency import KafkaErasureNotices, ResidencyTopics, read_table
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.blobs.port import blob_key, data_key_key
from mint.blobs.sealed import DESTROYED
from mint.blobs.sealing import open_sealed
from mint.domain import adapter as agg
from mint.domain.errors import DataLoss, Erased, FailedPrecondition, Unavailable
from mint.domain.names import AdapterRef
from mint.eventlog.port import Metadata
from mint.layout import ADAPTER_WEIGHTS, revision_prefix
from mint.registry import Principal, Registry
from mint.serving.erasures import ErasureNotice
from streams.projector.runner import rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK, kek_file

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
GONE, KEPT = AdapterRef("acme", "gone"), AdapterRef("acme", "kept")


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def world(kafka: KafkaConnection, s3: Minio, model_files: dict) -> Iterator[dict]:
    """Two adapters holding the very same weights, projected."""
    topic = f"erase-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    blobs = S3BlobStore(s3, topic, TEST_KEK)
    topics = ResidencyTopics(topic)
    topics.create(kafka)
    notices = KafkaErasureNotices(kafka, topics)
    registry = Registry(log, blobs, notices=notices)
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    ids = {}
    for ref in (GONE, KEPT):
        registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())
        out = registry.publish_revision(ALICE, ref, model_files["upload"], rid())
        ids[ref] = out.adapter.adapter_id
    sink = S3Sink(s3, f"{topic}-p", blobs_bucket=topic, kek=TEST_KEK)
    rebuild(log, sink)
    yield {
        "topic": topic,
        "log": log,
        "registry": registry,
        "ids": ids,
        "s3": s3,
        "sink": sink,
        "kafka": kafka,
        "topics": topics,
    }
    notices.close()
    log.close()


def _data_key(registry: Registry, adapter_id: str) -> bytes:
    wrapped = registry.blobs.objects.read(data_key_key(adapter_id))  # type: ignore[attr-defined]
    return TEST_KEK.unwrap(adapter_id, wrapped)


def _keys(s3: Minio, bucket: str, prefix: str = "") -> list[str]:
    return sorted(str(o.object_name) for o in s3.list_objects(bucket, prefix, recursive=True))


def test_erasure_leaves_no_copy_that_opens_and_spares_the_twin(world: dict) -> None:
    registry, s3, topic, ids = world["registry"], world["s3"], world["topic"], world["ids"]
    sha = registry.get(ALICE, GONE).revision(1).weights_sha256
    sealed_copy = s3.get_object(topic, blob_key(ids[GONE], sha)).read()  # say, a backup
    weights = revision_prefix("acme", "gone", 1) + ADAPTER_WEIGHTS
    assert weights in _keys(s3, f"{topic}-p")

    out = registry.erase(ALICE, GONE, rid())
    assert out.adapter.erased and out.result.last_version == out.adapter.version
    notices = read_table(world["kafka"], world["topics"].erased)  # what nodes and routers read
    assert ErasureNotice.decode(ids[GONE], notices[ids[GONE]]) == ErasureNotice(
        ids[GONE], str(GONE), out.adapter.erased_at, (sha,)
    )
    rebuild(world["log"], world["sink"])  # the live projector would do the same

    # Blob store: the blob is gone, the data key replaced by a tombstone.
    assert _keys(s3, topic, f"blobs/{ids[GONE]}/") == []
    assert s3.get_object(topic, data_key_key(ids[GONE])).read() == DESTROYED
    with pytest.raises(Erased):  # the backup copy, put back, opens no more
        s3.put_object(topic, blob_key(ids[GONE], sha), io.BytesIO(sealed_copy), len(sealed_copy))
        registry.blobs.get(ids[GONE], sha)
    with pytest.raises(DataLoss):  # nor with the twin's key (its blob's twin is sealed apart)
        open_sealed(_data_key(registry, ids[KEPT]), ids[GONE], sha, sealed_copy)
    # Projection: only the catalog entry is left, marked erased.
    projected = _keys(s3, f"{topic}-p")
    assert not [k for k in projected if k.startswith("adapters/acme/gone/")]
    entry = S3Objects(s3, f"{topic}-p").get("catalog/acme/gone.json") or b""
    assert out.adapter.erased_at in entry.decode()
    # A rebuild into an empty bucket writes none of its files either.
    fresh = f"{topic}-f"
    rebuild(world["log"], S3Sink(s3, fresh, blobs_bucket=topic, kek=TEST_KEK))
    assert not [k for k in _keys(s3, fresh) if k.startswith("adapters/acme/gone/")]
    # The twin with the same bytes serves on, from its own blob.
    assert registry.weights(ALICE, KEPT, 1) == registry.weights(OPS, KEPT, "latest")
    kept = revision_prefix("acme", "kept", 1) + ADAPTER_WEIGHTS
    assert kept in _keys(s3, fresh)


def test_the_audit_verifies_and_names_who_erased_it_when_and_where(world: dict) -> None:
    registry, s3, topic = world["registry"], world["s3"], world["topic"]
    out = registry.erase(ALICE, GONE, rid())
    rebuild(world["log"], world["sink"])
    report = verify.verify(world["log"].read_all(), registry.blobs, S3Objects(s3, f"{topic}-p"))
    assert report.clean, report.problems
    [erasure] = report.erasures
    tombstone = world["log"].read_stream(str(GONE))[-1]
    assert (erasure.stream_id, erasure.adapter_id, erasure.actor) == (
        str(GONE),
        world["ids"][GONE],
        "alice",
    )
    assert erasure.position == str(tombstone.position)
    assert erasure.erased_at[:16] == out.adapter.erased_at[:16]


def test_the_audit_command_lists_the_erasure_and_exits_clean(
    world: dict, endpoints: dict[str, str], tmp_path: Path
) -> None:
    world["registry"].erase(ALICE, GONE, rid())
    topic = world["topic"]
    options = ["--events-topic", topic, "--events-partitions", "2", "--blobs-bucket", topic]
    options += ["--kek-file", str(kek_file(tmp_path))]
    result = subprocess.run(
        [sys.executable, "-m", "mint.audit", "verify", *options],
        capture_output=True,
        text=True,
        env={**os.environ, **endpoints},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tombstone = world["log"].read_stream(str(GONE))[-1]
    assert f"ERASED acme/gone ({world['ids'][GONE]}) erased by alice at " in result.stdout
    assert f", {tombstone.position}\n" in result.stdout
    assert "1 erasures: clean" in result.stdout


def test_a_blob_gone_without_an_erasure_is_still_a_problem(world: dict) -> None:
    registry = world["registry"]
    registry.blobs.erase(world["ids"][KEPT])  # its key destroyed, no tombstone in the log
    report = verify.verify(world["log"].read_all(), registry.blobs)
    assert [p.stream_id for p in report.problems] == [str(KEPT)], report.problems
    assert "data key was destroyed" in report.problems[0].problem
    assert report.erasures == ()


def test_later_calls_say_it_was_erased_and_erasing_again_changes_nothing(
    world: dict, model_files: dict
) -> None:
    registry = world["registry"]
    first = registry.erase(ALICE, GONE, rid())
    for call in (
        lambda: registry.weights(ALICE, GONE, 1),
        lambda: registry.publish_revision(ALICE, GONE, model_files["upload"], rid()),
        lambda: registry.move_channel(ALICE, GONE, "stable", 1, rid()),
        lambda: registry.record_evaluation(ALICE, GONE, 1, "s", {}, True, rid()),
    ):
        erased_at = first.adapter.erased_at
        with pytest.raises(FailedPrecondition, match=f"acme/gone was erased at {erased_at}"):
            call()
    again = registry.erase(ALICE, GONE, rid())
    assert again.result.duplicate and again.adapter.version == first.adapter.version
    assert registry.get(ALICE, GONE).erased  # its history stays readable
    assert _keys(world["s3"], world["topic"], f"blobs/{world['ids'][GONE]}/") == []


def test_an_erasure_cut_short_after_its_tombstone_is_finished_by_the_sweep(
    world: dict,
) -> None:
    """The registry crashed between the event and destroying the key: the next sweep on
    the owner finishes it from the adapter's state, without reading the log at large."""
    registry, ids = world["registry"], world["ids"]
    state = registry.get(ALICE, GONE)
    registry.blobs.begin_erasure(ids[GONE], str(GONE))
    registry.log.append(
        str(GONE), state.version, agg.erase(state, "2026-12-01T00:00:00Z"), Metadata("alice", rid())
    )
    registry.blobs.begin_erasure(ids[KEPT], str(KEPT))  # begun, its event never landed
    sha = state.revision(1).weights_sha256
    assert registry.blobs.get(ids[GONE], sha)  # the key still opens: not finished yet

    assert registry.finish_erasures() == 1
    with pytest.raises(Erased):
        registry.blobs.get(ids[GONE], sha)
    assert ids[GONE] in read_table(world["kafka"], world["topics"].erased)
    assert [p.adapter_id for p in registry.blobs.pending_erasures()] == [ids[KEPT]]
    assert registry.weights(ALICE, KEPT, 1)  # a note alone erases nothing


def test_a_blob_missing_without_an_erasure_stops_the_projection_retryably(world: dict) -> None:
    """Only an erased adapter's files are skipped: a blob lost otherwise is a failure
    the projector retries (and reports degraded), as a failed copy was."""
    s3, topic, ids = world["s3"], world["topic"], world["ids"]
    sha = world["registry"].get(ALICE, KEPT).revision(1).weights_sha256
    s3.remove_object(topic, blob_key(ids[KEPT], sha))
    with pytest.raises(Unavailable, match=r"cannot project .*acme/kept"):
        rebuild(world["log"], S3Sink(s3, f"{topic}-lost", blobs_bucket=topic, kek=TEST_KEK))
