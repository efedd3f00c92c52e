"""Concurrent downloads of a large revision from a registry process, over the real Kafka
and S3.

A download reserves what it will hold (the sealed blob, and the weights opened from it)
before it reads the blob; one that would pass --max-download-bytes-in-flight is refused
with RESOURCE_EXHAUSTED (retry later), so the registry's resident memory stays within the
budget however many downloads arrive at once, and the downloads admitted are whole.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from deploy.local.registry import RegistryProcess
from mint.client import RegistryClient
from mint.client.build import revision_request
from mint.client.retry import pushback_named
from mint.v1 import registry_pb2_grpc
from tests.metrics import scrape
from tests.services.wide_lora import CONFIG, lora_weights, memory, registry_process, wide_base

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
BUDGET = 64 * MiB  # --max-download-bytes-in-flight
DOWNLOADS = 8  # at once, of a 24 MiB revision: each reserves 48 MiB, so one fits
# Without the budget the eight downloads, each holding the sealed blob and the weights,
# grow the registry by some 400 MiB.
RSS_GROWTH_BOUND = 2 * BUDGET
AUTH = (("authorization", "Bearer alice"),)
# No bandwidth probing: the flow-control window stays small, so an admitted download's
# stream cannot finish (and give its reservation back) while its reader waits.
NO_BDP = [("grpc.http2.bdp_probe", 0)]


@pytest.fixture
def registry(tmp_path: Path, endpoints: dict[str, str]) -> Iterator[RegistryProcess]:
    flags = ["--max-download-bytes-in-flight", str(BUDGET)]
    process = registry_process(tmp_path, endpoints, flags)
    try:
        yield process.start()
    finally:
        process.stop()


@dataclass
class Download:
    chunks: list[bytes] = field(default_factory=list)
    error: grpc.RpcError | None = None


def download(
    stub: registry_pb2_grpc.RegistryStub, ref: str, started: threading.Barrier, go: threading.Event
) -> Download:
    """Read the first chunk (the server has admitted or refused the call by then), wait
    until every download has, then read the rest."""
    found = Download()
    stream = stub.DownloadWeights(revision_request(ref, 1, ""), metadata=AUTH, timeout=60)
    try:
        found.chunks.append(next(stream).data)
    except grpc.RpcError as exc:
        found.error = exc
    started.wait(timeout=30)
    go.wait(timeout=30)
    if found.error is None:
        found.chunks += [chunk.data for chunk in stream]
    return found


def _downloads(registry: RegistryProcess) -> tuple[float, float]:
    """The registry's download figures: bytes held now, downloads refused so far."""
    samples = {s.name: s.value for s in scrape(registry.metrics_url)}
    return (
        samples["mint_registry_download_bytes_held"],
        samples["mint_registry_downloads_refused_total"],
    )


def test_concurrent_downloads_stay_within_the_budget(
    registry: RegistryProcess, unique: str
) -> None:
    admin = RegistryClient(registry.address, "admin")
    alice = RegistryClient(registry.address, "alice")
    fingerprint = hashlib.sha256(unique.encode()).hexdigest()
    admin.register_base("wide", fingerprint, wide_base())
    weights = lora_weights(3.0)
    alice.create_adapter("acme/big", fingerprint)
    alice.publish_revision("acme/big", (CONFIG, weights))
    assert registry.process is not None and registry.process.proc is not None
    pid = registry.process.proc.pid
    idle = memory(pid)["VmRSS"]

    started, go = threading.Barrier(DOWNLOADS + 1), threading.Event()
    with grpc.insecure_channel(registry.address, options=NO_BDP) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        with ThreadPoolExecutor(DOWNLOADS) as pool:
            calls = [pool.submit(download, stub, "acme/big", started, go) for _ in range(DOWNLOADS)]
            started.wait(timeout=30)  # every call admitted or refused, none finished
            held, refused = _downloads(registry)
            go.set()
            results = [call.result() for call in calls]
    growth = memory(pid)["VmHWM"] - idle

    admitted = [r for r in results if r.error is None]
    assert (held, refused) == (2 * len(weights) * len(admitted), DOWNLOADS - len(admitted))
    assert len(admitted) == 1, "a 64 MiB budget holds one 24 MiB download (48 MiB) at a time"
    for result in admitted:
        assert b"".join(result.chunks) == weights
    for result in results:
        if result.error is not None:
            assert result.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, result.error
            assert "retry later" in (result.error.details() or ""), result.error.details()
            assert pushback_named(result.error) is not None  # so clients retry by themselves
    assert _downloads(registry) == (0, DOWNLOADS - 1)  # every reservation given back
    assert growth <= RSS_GROWTH_BOUND, (
        f"the registry's peak memory grew by {growth / MiB:.0f} MiB for {DOWNLOADS} downloads "
        f"of {len(weights) / MiB:.0f} MiB; the bound is {RSS_GROWTH_BOUND / MiB:.0f} MiB"
    )
    assert alice.download_weights("acme/big", 1) == weights  # and later ones get in again


def test_the_client_waits_out_refusals_until_every_download_is_whole(
    registry: RegistryProcess, unique: str
) -> None:
    admin = RegistryClient(registry.address, "admin")
    alice = RegistryClient(registry.address, "alice", retry_for_s=60)
    fingerprint = hashlib.sha256(unique.encode()).hexdigest()
    admin.register_base("wide", fingerprint, wide_base())
    weights = lora_weights(4.0)
    alice.create_adapter("acme/many", fingerprint)
    alice.publish_revision("acme/many", (CONFIG, weights))
    with ThreadPoolExecutor(4) as pool:
        downloads = list(pool.map(lambda _: alice.download_weights("acme/many", 1), range(4)))
    held, refused = _downloads(registry)
    assert all(d == weights for d in downloads)
    assert refused >= 1, "four downloads at once, and one fits: some were refused for now"
    assert held == 0


def test_a_download_cancelled_midway_gives_its_bytes_back(
    registry: RegistryProcess, unique: str
) -> None:
    """A reader that goes away must not keep its reservation: else a few cancelled
    downloads would turn every later one away for good."""
    admin = RegistryClient(registry.address, "admin")
    alice = RegistryClient(registry.address, "alice")
    fingerprint = hashlib.sha256(unique.encode()).hexdigest()
    admin.register_base("wide", fingerprint, wide_base())
    weights = lora_weights(5.0)
    alice.create_adapter("acme/cut", fingerprint)
    alice.publish_revision("acme/cut", (CONFIG, weights))
    with grpc.insecure_channel(registry.address, options=NO_BDP) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        stream = stub.DownloadWeights(revision_request("acme/cut", 1, ""), metadata=AUTH)
        next(stream)
        assert _downloads(registry) == (2 * len(weights), 0)  # held while it is read
        stream.cancel()
        deadline = time.monotonic() + 10
        while _downloads(registry)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _downloads(registry) == (0, 0)
    assert alice.download_weights("acme/cut", 1) == weights
