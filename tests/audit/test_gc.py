"""Blob garbage collection against the real Kafka and S3: blobs left by commands that
failed after storing them are collected, young ones are left alone, and a blob a command
references while the collector holds it marked is never deleted (the command is refused
and its retry stores it again, or, having checked before the mark, its reference is
seen by the re-check). Blobs are per adapter: the same bytes referenced by one adapter
do not keep another adapter's copy, and an erased adapter's blobs are left to erasure."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from mint.audit.__main__ import main
from mint.audit.gc import run_gc
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.local_blobs import LocalBlobStore, local_kek
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.blobs.collector import collect
from mint.blobs.port import BlobId
from mint.domain.errors import Unavailable
from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Principal, Registry, Upload
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> list[Upload]:
    """Four LoRAs of the tiny base: four different blobs."""
    found = []
    for seed in range(4):
        folder = tmp_path_factory.mktemp(f"lora{seed}")
        attach_lora(build_base(tiny_llama_config(), seed=0), rank=4, seed=seed).save_pretrained(
            str(folder)
        )
        found.append(
            Upload((folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes())
        )
    return found


@dataclass
class World:
    registry: Registry
    log: KafkaEventLog
    blobs: S3BlobStore

    def adapter(self, model_files: dict) -> AdapterRef:
        self.registry.register_base(
            OPS, "tiny", model_files["fingerprint"], model_files["shapes"], uuid.uuid4().hex
        )
        ref = AdapterRef("acme", f"a-{uuid.uuid4().hex[:6]}")
        self.registry.create_adapter(ALICE, ref, model_files["fingerprint"], uuid.uuid4().hex)
        return ref

    def blob(self, ref: AdapterRef, upload: Upload) -> BlobId:
        adapter_id = self.registry.get(ALICE, ref).adapter_id
        return BlobId(adapter_id, hashlib.sha256(upload.weights).hexdigest())

    def publish(self, ref: AdapterRef, upload: Upload, request_id: str) -> int:
        return self.registry.publish_revision(ALICE, ref, upload, request_id).result.last_version

    def lose(self, ref: AdapterRef, upload: Upload, monkeypatch: pytest.MonkeyPatch) -> str:
        """A publish whose append fails after its blob was stored: an orphan."""
        request_id = uuid.uuid4().hex

        def fails(*args: object, **kwargs: object) -> None:
            raise Unavailable("the log went away")

        with monkeypatch.context() as patch:
            patch.setattr(self.log, "append", fails)
            with pytest.raises(Unavailable):
                self.publish(ref, upload, request_id)
        return request_id


@pytest.fixture
def world(kafka: KafkaConnection, s3: Minio, unique: str) -> Iterator[World]:
    log = KafkaEventLog(kafka, unique, partitions=2, txn_prefix=unique)
    blobs = S3BlobStore(s3, unique, TEST_KEK)
    yield World(Registry(log, blobs), log, blobs)
    log.close()


def test_orphans_of_failed_commands_are_collected_and_young_ones_left(
    world: World,
    uploads: list[Upload],
    model_files: dict,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ref = world.adapter(model_files)
    world.publish(ref, uploads[0], uuid.uuid4().hex)
    world.lose(ref, uploads[1], monkeypatch)
    # Another adapter publishes the first adapter's orphan bytes: its own copy, which
    # references nothing of the first adapter's.
    other = world.adapter(model_files)
    world.publish(other, uploads[1], uuid.uuid4().hex)
    kept, orphan = world.blob(ref, uploads[0]), world.blob(ref, uploads[1])

    young = collect(world.log, world.blobs, grace_s=3600, lease_s=0)
    assert (young.young, young.orphans, young.deleted) == (3, [], [])
    dry = collect(world.log, world.blobs, grace_s=0, lease_s=0, dry_run=True)
    assert dry.orphans == [orphan] and dry.referenced == 2
    assert dry.bytes_freed > len(uploads[1].weights)  # sealed: a little more than the bytes
    assert world.blobs.exists(*orphan) and list(world.blobs.marks()) == []

    metrics = tmp_path / "gc.prom"
    done = run_gc(world.log, world.blobs, grace_s=0, lease_s=0, dry_run=False, metrics_file=metrics)
    assert done.deleted == [orphan] and done.saved == []
    assert not world.blobs.exists(*orphan) and world.blobs.exists(*kept)
    assert list(world.blobs.marks()) == []
    assert world.registry.weights(ALICE, other, "latest") == uploads[1].weights
    assert "mint_gc_blobs_deleted 1.0" in metrics.read_text()
    assert world.registry.weights(ALICE, ref, "latest") == uploads[0].weights


def test_a_blob_referenced_while_marked_is_never_deleted(
    world: World, uploads: list[Upload], model_files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = world.adapter(model_files)
    refused_rid = world.lose(ref, uploads[2], monkeypatch)  # its client retries during gc
    world.lose(ref, uploads[3], monkeypatch)  # its command checked just before the mark
    refused, raced = world.blob(ref, uploads[2]), world.blob(ref, uploads[3])
    versions = len(world.log.read_stream(str(ref)))

    def during_the_lease(seconds: float) -> None:
        # The retry is refused while the blob is marked, and appends nothing.
        with pytest.raises(Unavailable, match=r"being collected.*retry"):
            world.publish(ref, uploads[2], refused_rid)
        assert len(world.log.read_stream(str(ref))) == versions
        # A command that found no mark (it checked just before) appends within the lease.
        with monkeypatch.context() as patch:
            patch.setattr(world.blobs, "marked", lambda adapter_id, sha256: False)
            world.publish(ref, uploads[3], uuid.uuid4().hex)

    run = collect(world.log, world.blobs, grace_s=0, lease_s=0, wait=during_the_lease)
    assert sorted(run.orphans) == sorted([refused, raced])
    assert run.saved == [raced] and run.deleted == [refused]
    assert world.blobs.get(*raced) == uploads[3].weights  # referenced: still there
    assert list(world.blobs.marks()) == []
    # The refused command's retry, after the collection, stores its blob again.
    world.publish(ref, uploads[2], refused_rid)
    assert world.registry.weights(ALICE, ref, "latest") == uploads[2].weights
    again = collect(world.log, world.blobs, grace_s=0, lease_s=0)
    assert again.deleted == []


def test_the_gc_command_dry_runs_then_deletes(
    tmp_path: Path, model_files: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    blobs = LocalBlobStore(tmp_path, local_kek(tmp_path / "kek"))  # the command's KEK
    registry = Registry(SqliteEventLog(tmp_path / "events.db"), blobs)
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], "r")
    created = registry.create_adapter(ALICE, REF, model_files["fingerprint"], "c")
    adapter_id = created.adapter.adapter_id
    orphan = blobs.put(adapter_id, b"bytes of a command that failed").sha256
    embedded = ["gc", "--backend", "embedded", "--data-dir", str(tmp_path), "--grace-s", "0"]
    assert main([*embedded, "--dry-run", "--lease-s", "0"]) == 0
    shown = capsys.readouterr()
    assert f"unreferenced {adapter_id} {orphan}" in shown.out
    assert "would delete 1 unreferenced" in shown.out
    assert "gc: done" in shown.err  # progress on stderr
    assert blobs.exists(adapter_id, orphan)
    assert main([*embedded, "--lease-s", "0"]) == 0
    assert f"deleted {adapter_id} {orphan}" in capsys.readouterr().out
    assert not blobs.exists(adapter_id, orphan)


def test_an_erased_adapters_blobs_are_left_to_erasure(
    world: World,
    uploads: list[Upload],
    model_files: dict,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Its orphan is neither marked nor deleted by the collector: the erasure (or its
    sweep, after a crash) deletes every blob of the adapter and destroys its key."""
    ref = world.adapter(model_files)
    world.publish(ref, uploads[0], uuid.uuid4().hex)
    world.lose(ref, uploads[1], monkeypatch)
    orphan = world.blob(ref, uploads[1])
    with monkeypatch.context() as patch:  # a crash between the tombstone and the key
        patch.setattr(world.blobs, "erase", lambda adapter_id: None)
        world.registry.erase(ALICE, ref, uuid.uuid4().hex)
    metrics = tmp_path / "gc.prom"
    run = run_gc(world.log, world.blobs, grace_s=0, lease_s=0, dry_run=False, metrics_file=metrics)
    assert (run.erased, run.orphans, run.deleted) == (2, [], [])
    assert "mint_gc_blobs_erased 2.0" in metrics.read_text()
    assert world.blobs.exists(*orphan) and list(world.blobs.marks()) == []
    assert world.registry.finish_erasures() == 1  # the sweep: erasure's business
    assert not world.blobs.exists(*orphan)
