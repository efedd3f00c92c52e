"""A registry process counts every call by method and status code, and times it, on
/metrics (real Kafka and S3)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from mint.client import RegistryClient
from tests.metrics import scrape
from tests.services.wide_lora import CONFIG, lora_weights, registry_process, wide_base


def test_calls_are_counted_by_method_and_code_and_timed(
    tmp_path: Path, endpoints: dict[str, str], unique: str
) -> None:
    process = registry_process(tmp_path, endpoints, []).start()
    try:
        admin = RegistryClient(process.address, "admin")
        alice = RegistryClient(process.address, "alice")
        fingerprint = hashlib.sha256(unique.encode()).hexdigest()
        admin.register_base("wide", fingerprint, wide_base())
        alice.create_adapter("acme/counted", fingerprint)
        alice.publish_revision("acme/counted", (CONFIG, lora_weights(1.0)))
        alice.download_weights("acme/counted", 1)
        with pytest.raises(grpc.RpcError) as missing:
            alice.get_adapter("acme/missing")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        samples = scrape(process.metrics_url)
    finally:
        process.stop()
    counted = {
        (s.labels["method"], s.labels["code"]): s.value
        for s in samples
        if s.name == "mint_registry_requests_total"
    }
    assert counted[("CreateAdapter", "OK")] == 1
    assert counted[("PublishRevision", "OK")] == 1
    assert counted[("DownloadWeights", "OK")] == 1
    assert counted[("GetAdapter", "NOT_FOUND")] == 1
    timed = {
        s.labels["method"]: s.value
        for s in samples
        if s.name == "mint_registry_request_seconds_count"
    }
    assert timed["PublishRevision"] == 1 and timed["GetAdapter"] == 1
