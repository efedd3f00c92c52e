"""The registry over gRPC, end to end against the real Kafka and S3."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mint.registry import Upload
from mint.v1 import registry_pb2 as pb
from tests.services.conftest import Running


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
    status = health.Check(health_pb2.HealthCheckRequest(service="mint.v1.Registry"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in next(responses).list_services_response.service}
    assert "mint.v1.Registry" in names


def test_lifecycle_through_the_client(running: Running, model_files: dict) -> None:
    admin, alice = running.client("admin-token"), running.client("alice-token")
    ref = f"acme/tone-{uuid.uuid4().hex[:6]}"
    base = admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    assert base.fingerprint == model_files["fingerprint"]
    created = alice.create_adapter(ref, base.fingerprint, labels={"kind": "tone"})
    assert created.adapter.owner == "alice" and created.first_version == 1
    upload: Upload = model_files["upload"]
    published = alice.publish_revision(
        ref,
        (upload.config, upload.weights),
        expected_version=1,
        training_run_id="run-1",
        hyperparameters={"lr": "1e-4"},
    )
    revision = published.adapter.revisions[0]
    assert revision.provenance.principal == "alice"
    assert revision.provenance.hyperparameters["lr"] == "1e-4"
    assert alice.get_revision(ref, channel="latest").weights_sha256 == revision.weights_sha256

    alice.set_gate(ref, "stable", "safety")
    alice.record_evaluation(ref, 1, "safety", {"acc": 0.99}, passed=True)
    promoted = alice.move_channel(ref, "stable", 1, reason="promote")
    assert promoted.adapter.channels["stable"] == 1
    history = alice.history(ref)
    assert [e.envelope.stream_version for e in history] == list(range(1, 7))
    assert [e.envelope.event_type.split(".")[-1] for e in history] == [
        "AdapterCreated",
        "RevisionPublished",
        "ChannelMoved",
        "ChannelGateSet",
        "EvaluationRecorded",
        "ChannelMoved",
    ]
    listed = [a.ref.name for a in alice.list_adapters("acme", {"kind": "tone"}, page_size=1)]
    assert ref.split("/")[1] in listed


def test_watch_streams_new_events_for_the_callers_tenant(
    running: Running, model_files: dict
) -> None:
    admin, alice = running.client("admin-token"), running.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/watched-{uuid.uuid4().hex[:6]}"
    (stub,) = alice.replicas.stubs
    seen: list[str] = []

    def watch() -> None:
        stream = stub.WatchEvents(
            pb.WatchEventsRequest(tenant="acme"), metadata=alice.metadata, timeout=30
        )
        for event in stream:
            if event.envelope.stream_id == ref:
                seen.append(event.envelope.event_type)
                if len(seen) == 1:
                    stream.cancel()
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    alice.create_adapter(ref, model_files["fingerprint"])
    watcher.join(timeout=30)
    assert seen == ["mint.v1.AdapterCreated"]


def test_a_watch_until_the_end_ends_with_the_tenants_events_so_far(
    running: Running, model_files: dict
) -> None:
    admin, alice = running.client("admin-token"), running.client("alice-token")
    admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
    ref = f"acme/scanned-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(ref, model_files["fingerprint"])
    admin.create_adapter(f"other/scanned-{uuid.uuid4().hex[:6]}", model_files["fingerprint"])
    # No cancel: the stream ends by itself once the log's end is read.
    events = list(alice.watch_events("acme", until_end=True))
    assert {e.envelope.stream_id.partition("/")[0] for e in events} == {"acme"}
    assert [e.envelope.event_type for e in events if e.envelope.stream_id == ref] == [
        "mint.v1.AdapterCreated"
    ]
    assert all(e.envelope.hash for e in events)  # as stored: the chain can be checked
