"""Erasure on the serving side, against the real Kafka and S3: a node holding an erased
adapter drops it from its slots, host memory and disk cache within one heartbeat, never
loads it again (an intent written before the controller heard included), and a node
started afterwards clears it from the disk cache it finds; a router refuses its requests
with the time of the erasure, whatever its cache or the projection still holds."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import (
    DesiredWriter,
    ErasureWatch,
    KafkaErasureNotices,
    ResidencyTopics,
    TableFollower,
)
from mint.backends.s3_objects import S3Objects
from mint.domain.errors import Erased
from mint.domain.names import AdapterRef
from mint.models.base import build_base, tiny_llama_config
from mint.serving.catalog import Catalog
from mint.serving.disk_cache import DiskCache
from mint.serving.engine import ServingEngine, key_of
from mint.serving.erasures import ErasureNotice
from mint.serving.packed_model import PackedLoraModel
from mint.serving.requests import RevisionRef, Selector
from mint.serving.residency import SlotTable
from mint.v1 import residency_pb2 as pb
from services.inference.metrics import NodeMetrics
from services.inference.reconciler import Reconciler
from tests.serving.test_reconciler import FINGERPRINT, HIDDEN, LAYERS, RANK, stored_revision

HEARTBEAT_S = 1.0  # the nodes' default report interval


def _node(
    kafka: KafkaConnection, topics: ResidencyTopics, s3: Minio, bucket: str, disk: Path
) -> tuple[Reconciler, ServingEngine]:
    """A node reporting every HEARTBEAT_S, with a disk tier in `disk`."""
    base = build_base(tiny_llama_config(hidden=HIDDEN, layers=LAYERS), seed=0)
    engine = ServingEngine(
        PackedLoraModel(base, ["q_proj"], 3, RANK), SlotTable(3, 2**24), FINGERPRINT, 64, 0, 1
    )
    catalog = Catalog(S3Objects(s3, bucket))
    node = Reconciler(
        "n1",
        "127.0.0.1:1",
        engine,
        catalog,
        kafka,
        topics,
        NodeMetrics(),
        HEARTBEAT_S,
        disk=DiskCache(disk, 2**26),
    )
    return node, engine


def _notice(ref: RevisionRef, erased_at: str = "2026-12-01T12:00:00Z") -> ErasureNotice:
    return ErasureNotice(ref.adapter_id, ref.adapter, erased_at, (ref.weights_sha256,))


def _resident(report: pb.NodeReport) -> set[str]:
    return {r.adapter_id for r in report.resident}


def test_a_node_drops_an_erased_adapter_everywhere_within_one_heartbeat(
    kafka: KafkaConnection, s3: Minio, unique: str, tmp_path: Path
) -> None:
    topics = ResidencyTopics(unique)
    topics.create(kafka)
    s3.make_bucket(unique)
    put = lambda k, d: s3.put_object(unique, k, io.BytesIO(d), len(d))  # noqa: E731
    gone, kept = stored_revision(put, 0), stored_revision(put, 1)
    node, engine = _node(kafka, topics, s3, unique, tmp_path / "disk")
    writer = DesiredWriter(kafka, topics, f"{unique}-controller")
    notices = KafkaErasureNotices(kafka, topics)
    status = TableFollower(kafka, topics.status)
    node.start()
    try:
        assert node.ready.wait(timeout=30)
        writer.activate()
        writer.write([("n1", gone, False), ("n1", kept, False)], [], term=1)
        assert engine.wait_resident(gone, 30) and engine.wait_resident(kept, 30)
        _report_with(status, lambda r: _resident(r) == {gone.adapter_id, kept.adapter_id})
        kept_on_disk = tmp_path / "disk" / f"{gone.weights_sha256}.safetensors"
        deadline = time.monotonic() + 10  # written once the hash matched, just after the load
        while not kept_on_disk.exists():
            assert time.monotonic() < deadline, "the verified bytes never reached the disk"
            time.sleep(0.01)
        while list(status.poll(timeout_s=0)):
            pass  # every report so far read: what follows comes after the notice
        notices.announce(_notice(gone))
        seen: list[pb.NodeReport] = []

        def evicted(report: pb.NodeReport) -> bool:
            seen.append(report)
            return _resident(report) == {kept.adapter_id}

        report = _report_with(status, evicted)
        # Within one heartbeat: the node reports the eviction at once, so at most one
        # report (a heartbeat already under way) comes before the one without it.
        assert len(seen) <= 2, [sorted(_resident(r)) for r in seen]
        assert [key_of(r) for r in engine.resident()] == [key_of(kept)]  # host and slots
        assert not (tmp_path / "disk" / f"{gone.weights_sha256}.safetensors").exists()
        assert (tmp_path / "disk" / f"{kept.weights_sha256}.safetensors").exists()
        assert any(o.kind == pb.LoadOutcome.EVICTED for o in report.outcomes)

        writer.write([("n1", gone, True)], [], term=2)  # a late intent, even pinned
        time.sleep(3 * 0.1)  # a few reconcile rounds: nothing to wait for
        assert not engine.is_resident(gone)
    finally:
        node.stop()

    # A node started afterwards with the same disk: the file of the erased adapter found
    # there (put back, as a crash mid-drop would leave it) is gone before it is ready.
    (tmp_path / "disk" / f"{gone.weights_sha256}.safetensors").write_bytes(b"stale")
    again, engine = _node(kafka, topics, s3, unique, tmp_path / "disk")
    again.start()
    try:
        assert again.ready.wait(timeout=30)
        assert not (tmp_path / "disk" / f"{gone.weights_sha256}.safetensors").exists()
        assert engine.wait_resident(kept, 30) and not engine.is_resident(gone)
    finally:
        again.stop()
        writer.close()
        notices.close()
        status.close()


def test_a_router_catalog_refuses_an_erased_adapter_it_still_has_cached(
    kafka: KafkaConnection, s3: Minio, unique: str
) -> None:
    topics = ResidencyTopics(unique)
    topics.create(kafka)
    s3.make_bucket(unique)
    put = lambda k, d: s3.put_object(unique, k, io.BytesIO(d), len(d))  # noqa: E731
    gone = stored_revision(put, 0)
    manifest = {
        "adapter_id": gone.adapter_id,
        "base_fingerprint": FINGERPRINT,
        "config_json": gone.config_json,
        "files": {"adapter_model.safetensors": {"sha256": gone.weights_sha256, "size": 1}},
    }
    put("adapters/acme/a0/revisions/1/manifest.json", json.dumps(manifest).encode())
    catalog = Catalog(S3Objects(s3, unique))
    selector = Selector(AdapterRef("acme", "a0"), revision=1)
    assert catalog.resolve(selector).adapter_id == gone.adapter_id  # cached now
    notices = KafkaErasureNotices(kafka, topics)
    notices.announce(_notice(gone))
    watch = ErasureWatch(kafka, topics, catalog.erase)
    try:
        assert watch.caught_up.wait(timeout=30)
        with pytest.raises(Erased, match="acme/a0 was erased at 2026-12-01T12:00:00Z"):
            catalog.resolve(selector)
    finally:
        watch.close()
        notices.close()


def _report_with(status: TableFollower, done: Callable[[pb.NodeReport], bool]) -> pb.NodeReport:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _, value in status.poll(timeout_s=0.05):
            if value is not None and done(report := pb.NodeReport.FromString(value)):
                return report
    raise AssertionError("no such report from the node")
