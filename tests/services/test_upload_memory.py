"""Concurrent large uploads to a registry process, over the real Kafka and S3.

The registry's resident memory stays within its upload budget however many uploads
arrive at once; an upload that would pass the budget is refused with RESOURCE_EXHAUSTED
(retry later) before its body is read, and stores nothing: no event, no blob.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from minio import Minio

from deploy.local.registry import RegistryProcess
from mint.blobs.port import blob_key
from mint.client import RegistryClient
from mint.client.retry import pushback_named
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc
from tests.metrics import scrape
from tests.services.wide_lora import CONFIG, lora_weights, memory, registry_process, wide_base

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
BUDGET = 64 * MiB  # --max-upload-bytes-in-flight
UPLOADS = 8  # at once, 24 MiB each: 192 MiB asked for, three times the budget
CHUNK = 1 * MiB
# An admitted upload is held in memory once while it arrives (spooled to disk), twice while
# it is stored (sealed), and reserves that: the peak grows by about the budget; twice
# that leaves room for gRPC buffers and the allocator. Without a budget the eight
# uploads, each held three times, need over 400 MiB.
RSS_GROWTH_BOUND = 2 * BUDGET
AUTH = (("authorization", "Bearer alice"),)


@pytest.fixture
def registry(tmp_path: Path, endpoints: dict[str, str]) -> Iterator[RegistryProcess]:
    process = registry_process(tmp_path, endpoints, ["--max-upload-bytes-in-flight", str(BUDGET)])
    try:
        yield process.start()
    finally:
        process.stop()


@dataclass
class Attempt:
    ref: str
    weights: bytes
    result: pb.CommandResult | None = None
    error: grpc.RpcError | None = None


def header(ref: str, weights: bytes, declared_size: int | None = None) -> pb.PublishRevisionHeader:
    tenant, _, name = ref.partition("/")
    return pb.PublishRevisionHeader(
        ref=pb.AdapterRef(tenant=tenant, name=name),
        request_id=uuid.uuid4().hex,
        adapter_config=CONFIG,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        weights_size=len(weights) if declared_size is None else declared_size,
    )


def publish(
    stub: registry_pb2_grpc.RegistryStub, attempt: Attempt, bodies_may_flow: threading.Event
) -> None:
    """One upload whose body waits until every upload has sent its header: all of them
    are open at the same time, so the budget, not the timing, decides who gets in."""

    def parts() -> Iterator[pb.PublishRevisionRequest]:
        yield pb.PublishRevisionRequest(header=header(attempt.ref, attempt.weights))
        bodies_may_flow.wait(timeout=30)
        for start in range(0, len(attempt.weights), CHUNK):
            yield pb.PublishRevisionRequest(weights_chunk=attempt.weights[start : start + CHUNK])

    try:
        attempt.result = stub.PublishRevision(parts(), metadata=AUTH, timeout=60)
    except grpc.RpcError as exc:
        attempt.error = exc


def _uploads(registry: RegistryProcess) -> tuple[float, float]:
    """The registry's upload figures: bytes held now, uploads refused so far."""
    samples = {s.name: s.value for s in scrape(registry.metrics_url)}
    return samples["mint_registry_upload_bytes_held"], samples[
        "mint_registry_uploads_refused_total"
    ]


def _wait_until_every_header_is_seen(registry: RegistryProcess, attempts: list[Attempt]) -> None:
    """Until each upload is admitted (holding its reservation) or refused: all of them are
    open at once before any body flows, however loaded the machine."""
    each = 2 * len(attempts[0].weights)  # as received, and sealed while stored
    deadline = time.monotonic() + 30
    while True:
        held, refused = _uploads(registry)
        if held / each + refused >= len(attempts):
            return
        assert time.monotonic() < deadline, (
            f"headers seen: {held / each:.0f} held, {refused:.0f} refused"
        )
        time.sleep(0.05)


def test_concurrent_uploads_stay_within_the_budget(
    registry: RegistryProcess, s3: Minio, unique: str
) -> None:
    admin = RegistryClient(registry.address, "admin")
    alice = RegistryClient(registry.address, "alice")
    fingerprint = hashlib.sha256(unique.encode()).hexdigest()
    admin.register_base("wide", fingerprint, wide_base())
    attempts = [Attempt(f"acme/big-{i}", lora_weights(i + 1.0)) for i in range(UPLOADS)]
    for attempt in attempts:
        alice.create_adapter(attempt.ref, fingerprint)
    assert registry.process is not None and registry.process.proc is not None
    pid = registry.process.proc.pid
    idle = memory(pid)["VmRSS"]

    bodies_may_flow = threading.Event()
    with grpc.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        with ThreadPoolExecutor(UPLOADS) as pool:
            calls = [pool.submit(publish, stub, a, bodies_may_flow) for a in attempts]
            _wait_until_every_header_is_seen(registry, attempts)
            bodies_may_flow.set()
            for call in calls:
                call.result()
    growth = memory(pid)["VmHWM"] - idle

    assert growth <= RSS_GROWTH_BOUND, (
        f"the registry's peak memory grew by {growth / MiB:.0f} MiB for {UPLOADS} uploads "
        f"of {len(attempts[0].weights) / MiB:.0f} MiB; the bound is "
        f"{RSS_GROWTH_BOUND / MiB:.0f} MiB (twice the {BUDGET / MiB:.0f} MiB budget)"
    )
    stored = [a for a in attempts if a.result is not None]
    refused = [a for a in attempts if a.error is not None]
    print(f"\n{len(stored)} stored, {len(refused)} refused; peak grew {growth / MiB:.0f} MiB")
    assert stored, "no upload got in: the budget must admit uploads that fit"
    assert refused, "every upload got in: more than the budget was held at once"
    assert _uploads(registry) == (0, len(refused))  # what the metrics tell operators
    for attempt in refused:
        assert attempt.error is not None
        assert attempt.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, attempt.error
        assert "retry later" in (attempt.error.details() or ""), attempt.error.details()
        assert pushback_named(attempt.error) is not None  # the clients retry by themselves
    bucket = registry.topic
    stored_blobs = [
        str(o.object_name) for o in s3.list_objects(bucket, prefix="blobs/", recursive=True)
    ]
    for attempt in attempts:
        sha256 = hashlib.sha256(attempt.weights).hexdigest()
        blobs = [name for name in stored_blobs if name.endswith(sha256)]
        if attempt.result is not None:
            key = blob_key(attempt.result.adapter.adapter_id, sha256)
        events = alice.history(attempt.ref)
        if attempt.result is not None:  # created, then published
            assert len(events) == attempt.result.last_version > 1, attempt.ref
            assert blobs == [key], attempt.ref
        else:  # refused: only its creation, and no blob
            assert (len(events), blobs) == (1, []), attempt.ref


def test_an_upload_larger_than_the_whole_budget_is_refused_at_its_header(
    registry: RegistryProcess,
) -> None:
    """It could never get in: refused before any body byte, saying why, not 'retry'."""
    with grpc.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        declared = pb.PublishRevisionRequest(
            header=header("acme/huge", b"", declared_size=BUDGET + 1)
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.PublishRevision(iter([declared]), metadata=AUTH, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max-upload-bytes-in-flight" in (refused.value.details() or "")
    assert pushback_named(refused.value) is None  # so no client retries it
