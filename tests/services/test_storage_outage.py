"""S3 down under a running registry: a publish is refused promptly with UNAVAILABLE and a
message that says to retry (not INTERNAL), and goes through once S3 is back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.client import RegistryClient
from mint.registry import Principal, Registry, Upload
from mint.rpc.auth import TokenTable, token_digest
from services.registry.server import build_server
from tests.infra.own_s3 import own_client, own_s3, restart
from tests.keys import TEST_KEK

pytestmark = pytest.mark.slow

TOKENS = {
    "admin-token": Principal("ops", frozenset({"*"}), admin=True),
    "alice-token": Principal("alice", frozenset({"acme"})),
}


def test_publish_with_s3_down_is_unavailable_and_says_to_retry(
    kafka: KafkaConnection, model_files: dict, tmp_path: Path
) -> None:
    topic = f"outage-{uuid.uuid4().hex[:10]}"
    with own_s3(tmp_path / "s3") as server:
        log = KafkaEventLog(kafka, topic, partitions=1, txn_prefix=topic)
        registry = Registry(log, S3BlobStore(own_client(server), topic, TEST_KEK))
        tokens = TokenTable((token_digest(t), p) for t, p in TOKENS.items())
        grpc_server, port = build_server(registry, tokens)
        admin = RegistryClient(f"127.0.0.1:{port}", "admin-token", retry_for_s=0)
        alice = RegistryClient(f"127.0.0.1:{port}", "alice-token", retry_for_s=0)
        upload: Upload = model_files["upload"]
        try:
            admin.register_base("tiny", model_files["fingerprint"], model_files["shapes"])
            alice.create_adapter("acme/tone", model_files["fingerprint"])

            server.process.kill()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                alice.publish_revision("acme/tone", (upload.config, upload.weights))
            took = time.monotonic() - started

            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
            assert "retry" in str(refused.value.details())
            assert took < 5, f"the refusal took {took:.1f} s"
            assert [r.envelope.event_type for r in log.read_all()][-1].endswith("AdapterCreated"), (
                "nothing may be appended while the blob could not be stored"
            )

            restart(server)
            published = alice.publish_revision("acme/tone", (upload.config, upload.weights))
            assert published.adapter.revisions[0].number == 1
        finally:
            admin.close()
            alice.close()
            grpc_server.stop(grace=1).wait()
            log.close()
