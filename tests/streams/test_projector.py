"""The S3 projection, against the real Kafka and S3: layout, PEFT round trip, idempotent
redelivery, and a rebuild from offset 0 equal to the live projection."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer
from minio import Minio
from peft import PeftModel

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.backends.s3_blobs import S3BlobStore
from mint.domain.errors import Unavailable
from mint.domain.events import ChannelMoved
from mint.domain.names import AdapterRef
from mint.eventlog.port import Metadata, build_envelopes
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.projection import PutJson
from mint.registry import Principal, Registry, Upload
from streams.projector.runner import Projector, rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def world(kafka: KafkaConnection, s3: Minio, model_files: dict, tmp_path: Path) -> Iterator[dict]:
    """A registry with two revisions of acme/tone, stable -> 1, latest -> 2."""
    topic = f"proj-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    registry.create_adapter(ALICE, REF, model_files["fingerprint"], rid(), labels={"k": "v"})
    first: Upload = model_files["upload"]
    second_model = attach_lora(build_base(tiny_llama_config(), seed=0), rank=4, seed=2)
    second_model.save_pretrained(str(tmp_path / "second"))
    second = Upload(
        (tmp_path / "second" / ADAPTER_CONFIG).read_bytes(),
        (tmp_path / "second" / ADAPTER_WEIGHTS).read_bytes(),
    )
    registry.publish_revision(ALICE, REF, first, rid())
    registry.move_channel(ALICE, REF, "stable", 1, rid())
    registry.publish_revision(ALICE, REF, second, rid(), parents=(1,))
    registry.record_evaluation(ALICE, REF, 2, "smoke", {"acc": 0.5}, False, rid())
    yield {"kafka": kafka, "topic": topic, "log": log, "s3": s3}
    log.close()


def _objects(s3: Minio, bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {
        str(o.object_name)[len(prefix) :]: s3.get_object(bucket, str(o.object_name)).read()
        for o in s3.list_objects(bucket, prefix=prefix, recursive=True)
    }


def _project(world: dict, bucket: str) -> S3Sink:
    sink = S3Sink(world["s3"], bucket, blobs_bucket=world["topic"], kek=TEST_KEK)
    projector = Projector(world["kafka"], world["topic"], sink, group_id=bucket)
    projector.run(stop_when_caught_up_s=1)
    assert projector.lag() == {0: 0, 1: 0}
    projector.close()
    return sink


def test_live_projection_layout_and_pointers(world: dict) -> None:
    bucket = f"live-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    objects = _objects(world["s3"], bucket)
    base = "adapters/acme/tone/"
    for n in (1, 2):
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST):
            assert f"{base}revisions/{n}/{name}" in objects
    stable = json.loads(objects[f"{base}channels/stable.json"])
    latest = json.loads(objects[f"{base}channels/latest.json"])
    current = json.loads(objects[f"{base}current.json"])
    assert (stable["revision"], latest["revision"], current["revision"]) == (1, 2, 1)
    manifest = json.loads(objects[latest["manifest"]])
    assert manifest["parents"] == [1]
    assert manifest["provenance"]["principal"] == "alice"
    weights = objects[f"{base}revisions/2/{ADAPTER_WEIGHTS}"]
    assert manifest["files"][ADAPTER_WEIGHTS]["size"] == len(weights)
    evaluations = json.loads(objects[f"{base}revisions/2/evaluations.json"])["evaluations"]
    assert evaluations[0]["suite"] == "smoke" and evaluations[0]["passed"] is False
    catalog = json.loads(objects["catalog/acme/tone.json"])
    assert catalog["labels"] == {"k": "v"} and catalog["archived"] is False


def test_revision_downloaded_from_the_projection_loads_with_peft(
    world: dict, model_files: dict, tmp_path: Path
) -> None:
    bucket = f"peft-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    folder = tmp_path / "download"
    folder.mkdir()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        key = f"adapters/acme/tone/revisions/1/{name}"
        (folder / name).write_bytes(world["s3"].get_object(bucket, key).read())
    reference = attach_lora(build_base(tiny_llama_config(), seed=0), rank=4, seed=1)
    loaded = PeftModel.from_pretrained(build_base(tiny_llama_config(), seed=0), folder)
    tokens = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, reference(tokens).logits)


def test_redelivery_writes_nothing_and_rebuild_equals_live(world: dict) -> None:
    bucket = f"idem-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    again = S3Sink(world["s3"], bucket, blobs_bucket=world["topic"], kek=TEST_KEK)
    assert rebuild(world["log"], again) > 0
    assert again.written == 0, "replaying every event must leave the projection as it is"

    fresh = f"rebuilt-{uuid.uuid4().hex[:8]}"
    rebuild(
        world["log"],
        S3Sink(world["s3"], fresh, blobs_bucket=world["topic"], prefix="p/", kek=TEST_KEK),
    )
    assert _objects(world["s3"], fresh, prefix="p/") == _objects(world["s3"], bucket)


def test_rebuild_into_the_projection_repairs_every_object_that_differs(world: dict) -> None:
    """Damage that keeps sizes and versions: a weights copy overwritten with other bytes
    of the same size, a config replaced, a pointer altered under the same version."""
    bucket = f"repair-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    s3, base = world["s3"], "adapters/acme/tone/"
    intact = _objects(s3, bucket)
    weights = f"{base}revisions/1/{ADAPTER_WEIGHTS}"
    stable = json.loads(intact[f"{base}channels/stable.json"])
    damage = {
        weights: bytes(len(intact[weights])),
        f"{base}revisions/2/{ADAPTER_CONFIG}": b"{}",
        f"{base}channels/stable.json": json.dumps({**stable, "revision": 2}).encode(),
    }
    for key, data in damage.items():
        s3.put_object(bucket, key, io.BytesIO(data), len(data))

    sink = S3Sink(s3, bucket, blobs_bucket=world["topic"], kek=TEST_KEK)
    rebuild(world["log"], sink)
    assert sink.written == len(damage)
    assert _objects(s3, bucket) == intact


def test_an_object_uploaded_in_parts_is_written_again_once_in_one_request(s3: Minio) -> None:
    """Older code wrote large revision files with the SDK's multipart upload, whose ETag
    is no MD5: such a file is replaced once, in one request, and left alone after."""
    bucket = f"parts-{uuid.uuid4().hex[:8]}"
    sink = S3Sink(s3, bucket, blobs_bucket=bucket, kek=TEST_KEK)
    key, body = "adapters/acme/big/revisions/1/file.json", b"7" * (6 * 1024 * 1024)
    s3.put_object(bucket, key, io.BytesIO(body), len(body), part_size=5 * 1024 * 1024)
    assert "-" in str(s3.stat_object(bucket, key).etag)  # multipart
    for _ in range(2):
        sink.apply([PutJson(key, body)])
    assert sink.written == 1
    assert s3.stat_object(bucket, key).etag == hashlib.md5(body).hexdigest()
    assert s3.get_object(bucket, key).read() == body


def test_a_file_changed_while_being_replaced_is_left_to_its_writer_and_unavailable(
    s3: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged revision file is replaced only if it is still the one whose ETag was read:
    another writer's change in between wins, and the projector hears a retryable error."""
    bucket = f"raced-{uuid.uuid4().hex[:8]}"
    sink = S3Sink(s3, bucket, blobs_bucket=bucket, kek=TEST_KEK)
    key = "adapters/acme/raced/revisions/1/file.json"
    s3.put_object(bucket, key, io.BytesIO(b"damaged"), 7)
    read_etag = sink._etag

    def racing(bucket_name: str, full: str) -> str | None:
        etag = read_etag(bucket_name, full)
        s3.put_object(bucket_name, full, io.BytesIO(b"another writer"), 14)
        return etag

    monkeypatch.setattr(sink, "_etag", racing)
    with pytest.raises(Unavailable, match="changed while being written"):
        sink.apply([PutJson(key, b'{"revision": 1}')])
    assert s3.get_object(bucket, key).read() == b"another writer"


def test_restarted_projector_resumes_from_its_committed_offsets(world: dict) -> None:
    bucket = f"resume-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    registry = Registry(world["log"], S3BlobStore(world["s3"], world["topic"], TEST_KEK))
    registry.move_channel(ALICE, REF, "stable", 2, rid())  # one more event after the stop
    sink = _project(world, bucket)  # same group: resumes, knowing the state before
    assert sink.written == 2  # stable.json and current.json, nothing else
    current = json.loads(world["s3"].get_object(bucket, "adapters/acme/tone/current.json").read())
    assert current["revision"] == 2


def _append(world: dict, *values: bytes) -> None:
    """Records appended to acme/tone's partition by a client with write access to the
    topic, not by a registry."""
    producer = KafkaProducer(**world["kafka"].options())
    partition = partition_for(str(REF), 2)
    for value in values:
        producer.send(world["topic"], value=value, key=str(REF).encode(), partition=partition)
    producer.flush()
    producer.close()


def _forged(
    stream: str, version: int, prev_hash: bytes, event: ChannelMoved, event_type: str = ""
) -> bytes:
    (envelope,) = build_envelopes(stream, version, prev_hash, [event], Metadata("mallory", rid()))
    envelope.event_type = event_type or envelope.event_type
    return envelope.SerializeToString()


def test_records_no_registry_wrote_are_skipped_and_counted_not_fatal(world: dict) -> None:
    bucket = f"foreign-{uuid.uuid4().hex[:8]}"
    _project(world, bucket)
    registry = Registry(world["log"], S3BlobStore(world["s3"], world["topic"], TEST_KEK))
    _append(
        world,
        b"\x00not an envelope\xff" * 3,
        _forged("acme/ghost", 6, b"", ChannelMoved("stable", 1, 0)),  # never created
    )
    moved = registry.move_channel(ALICE, REF, "stable", 2, rid())  # after them: projected
    _append(
        world,
        _forged(str(REF), moved.result.last_version, b"not its head", ChannelMoved("stable", 1, 2)),
        _forged("acme/squat", 0, b"", ChannelMoved("stable", 1, 0)),  # a first event, no create
        _forged("acme/odd", 3, b"", ChannelMoved("x", 1, 0), "mint.v1.NoSuchEvent"),
    )
    sink = S3Sink(world["s3"], bucket, blobs_bucket=world["topic"], kek=TEST_KEK)
    projector = Projector(world["kafka"], world["topic"], sink, group_id=bucket)
    projector.run(stop_when_caught_up_s=1)
    text = projector.metrics.render()
    projector.close()
    current = json.loads(world["s3"].get_object(bucket, "adapters/acme/tone/current.json").read())
    assert current["revision"] == 2  # the forged move back to 1 was not followed
    assert "mint_projector_foreign_records_total 5" in text
    names = list(_objects(world["s3"], bucket))
    assert not any("ghost" in name or "squat" in name for name in names)
    restarted = _project(world, bucket)  # a new member folds past them to its offsets
    assert restarted.written == 0
    rebuilt = f"rebuilt-{bucket}"  # a rebuild skips them too
    rebuild(world["log"], S3Sink(world["s3"], rebuilt, blobs_bucket=world["topic"], kek=TEST_KEK))
    assert _objects(world["s3"], rebuilt) == _objects(world["s3"], bucket)


def test_metrics_endpoint_reports_lag_and_health() -> None:
    import urllib.request

    from streams.projector.metrics import ProjectorMetrics

    metrics = ProjectorMetrics()
    metrics.publish(applied=42, lag={0: 3, 1: 0})
    server = metrics.serve(0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        health = urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
    finally:
        server.shutdown()
    assert "mint_projector_events_applied_total 42" in text
    assert 'mint_projector_lag{partition="0"} 3' in text
    assert health == b"ok\n"
