"""A replica that does not own an adapter's partition refuses a command for it at once,
before any work (nothing stored in S3), and names the replica that owns it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.services import stop_all
from deploy.local.stack import free_ports
from mint.backends.s3 import S3Settings, client
from mint.client import RegistryClient
from mint.client.retry import OWNER_METADATA
from tests.metrics import scrape

pytestmark = pytest.mark.slow


@pytest.fixture
def two_replicas(tmp_path: Path, endpoints: dict[str, str]) -> Iterator[list[RegistryProcess]]:
    tokens = write_tokens(
        tmp_path / "tokens.json",
        {
            "admin": {"principal": "ops", "tenants": ["*"], "admin": True},
            "alice": {"principal": "alice", "tenants": ["acme"]},
        },
    )
    topic = f"owner-{uuid.uuid4().hex[:8]}"
    processes = [
        RegistryProcess(port, topic, tokens, tmp_path / f"replica-{i}.log", endpoints, 4)
        for i, port in enumerate(free_ports(2))
    ]
    try:
        for replica in processes:
            replica.start()
        yield processes
    finally:
        stop_all(processes)


def _refusal(replica: RegistryProcess, call: str, *args: object) -> grpc.RpcError | None:
    """The replica's answer to one command, alone (no retries, no other replica)."""
    alone = RegistryClient(replica.address, "alice", retry_for_s=0)
    try:
        getattr(alone, call)(*args)
        return None
    except grpc.RpcError as exc:
        return exc
    finally:
        alone.close()


def _owner_named(error: grpc.RpcError) -> str:
    call: grpc.Call = error  # type: ignore[assignment]  # a failed call is both
    return next((str(v) for k, v in call.trailing_metadata() or () if k == OWNER_METADATA), "")


def test_a_non_owner_refuses_at_once_names_the_owner_and_stores_nothing(
    two_replicas: list[RegistryProcess], model_files: dict, s3_settings: S3Settings
) -> None:
    a, b = two_replicas
    both = RegistryClient(f"ipv4:{a.address},{b.address}", "admin", retry_for_s=60)
    base = model_files["fingerprint"]
    both.register_base("tiny", base, model_files["shapes"])
    alice = RegistryClient(f"ipv4:{a.address},{b.address}", "alice", retry_for_s=60)
    refs = [f"acme/o{i}" for i in range(8)]
    for ref in refs:
        alice.create_adapter(ref, base)

    # Claims are read every 2 s: until then a refusal may not name the owner yet; and b
    # serves before the group has given it partitions, so a may still take every ref. Done
    # once a round found b owning some and every refusal naming it.
    deadline, named = time.monotonic() + 20, dict[str, grpc.RpcError]()
    while time.monotonic() < deadline:
        unnamed = 0
        for ref in (r for r in refs if r not in named):
            error = _refusal(a, "set_gate", ref, "stable", "suite")
            if error is not None and _owner_named(error):
                named[ref] = error
            elif error is not None:
                unnamed += 1
        if named and not unnamed:
            break
        time.sleep(0.5)
    assert named, "replica a never named another owner (it may own every partition)"
    assert all(_owner_named(e) == b.address for e in named.values())
    ref, error = next(iter(named.items()))
    call: grpc.Call = error  # type: ignore[assignment]
    assert call.code() == grpc.StatusCode.UNAVAILABLE
    assert f"its owner is at {b.address}" in (call.details() or "")

    s3 = client(s3_settings)
    before = sum(1 for _ in s3.list_objects(a.topic, recursive=True))
    upload = model_files["upload"]
    started = time.perf_counter()
    refused = _refusal(a, "publish_revision", ref, (upload.config, upload.weights))
    elapsed = time.perf_counter() - started
    assert refused is not None and _owner_named(refused) == b.address
    assert sum(1 for _ in s3.list_objects(a.topic, recursive=True)) == before  # nothing stored
    assert elapsed < 1.0  # a refusal, not a validation and an upload (bench: ≤ 5 ms)
    assert _refusal(b, "set_gate", ref, "stable", "suite") is None  # the owner takes it
    # A client knowing both replicas goes from the refusal straight to the owner.
    alice.replicas._chosen[ref] = 0  # a first
    alice.set_gate(ref, "canary", "suite")
    assert alice.replicas.choose(ref) == 1


def _forwarded(replica: RegistryProcess) -> dict[tuple[str, str], float]:
    """The replica's count of reads passed on, by (method, outcome)."""
    return {
        (s.labels["method"], s.labels["outcome"]): s.value
        for s in scrape(replica.metrics_url)
        if s.name == "mint_registry_reads_forwarded_total"
    }


def test_reads_of_another_replicas_adapter_are_answered_by_its_owner(
    tmp_path: Path, endpoints: dict[str, str], model_files: dict
) -> None:
    tokens = write_tokens(
        tmp_path / "tokens.json",
        {
            "admin": {"principal": "ops", "tenants": ["*"], "admin": True},
            "alice": {"principal": "alice", "tenants": ["acme"]},
            "bob": {"principal": "bob", "tenants": ["bobco"]},
        },
    )
    topic = f"reads-{uuid.uuid4().hex[:8]}"
    a, b = (
        RegistryProcess(port, topic, tokens, tmp_path / f"r{i}.log", endpoints, 4, metrics_port=m)
        for i, (port, m) in enumerate(zip(free_ports(2), free_ports(2), strict=True))
    )
    try:
        a.start()
        b.start()
        both = f"ipv4:{a.address},{b.address}"
        RegistryClient(both, "admin", retry_for_s=60).register_base(
            "tiny", model_files["fingerprint"], model_files["shapes"]
        )
        alice = RegistryClient(both, "alice", retry_for_s=60)
        refs = [f"acme/r{i}" for i in range(8)]
        upload = model_files["upload"]
        for ref in refs:
            alice.create_adapter(ref, model_files["fingerprint"])
            alice.publish_revision(ref, (upload.config, upload.weights))
        # Claims are read every 2 s: wait until a refuses a command naming b.
        deadline, theirs = time.monotonic() + 20, list[str]()
        while time.monotonic() < deadline and not theirs:
            theirs = [
                r for r in refs if (e := _refusal(a, "set_gate", r, "x", "y")) and _owner_named(e)
            ]
            time.sleep(0.5)
        assert theirs, "replica a never named another owner"
        ref = theirs[0]

        at_a = RegistryClient(a.address, "alice", retry_for_s=0)  # a alone: no retries
        at_b = RegistryClient(b.address, "alice", retry_for_s=0)
        assert at_a.get_adapter(ref) == at_b.get_adapter(ref)
        assert at_a.get_revision(ref, revision=1) == at_b.get_revision(ref, revision=1)
        assert at_a.history(ref) == at_b.history(ref)
        assert at_a.download_weights(ref, 1) == upload.weights
        counts = _forwarded(a)
        for method in ("GetAdapter", "History", "DownloadWeights"):
            assert counts.get((method, "answered")) == 1, (method, counts)
        # The download asked its size first, to hold the owner's chunks within a's budget.
        assert counts.get(("GetRevision", "answered")) == 2, counts
        assert not _forwarded(b)  # the owner answered them itself

        # The owner's refusals come back unchanged, and other tenants learn nothing.
        with pytest.raises(grpc.RpcError) as missing:
            at_a.get_revision(ref, revision=9)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        bob = RegistryClient(a.address, "bob", retry_for_s=0)
        with pytest.raises(grpc.RpcError) as denied:
            bob.get_adapter(ref)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _forwarded(a).get(("GetAdapter", "answered")) == 1  # refused before passing on

        # With its owner gone, a reads the adapter itself rather than fail.
        b.kill()
        assert at_a.get_adapter(ref).ref.name == ref.split("/")[1]
    finally:
        a.stop()
        b.stop()
