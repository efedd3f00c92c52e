"""A registry gRPC server over the real Kafka and S3, with its callers (an admin, three
users, the platform's evaluator)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.client import RegistryClient
from mint.registry import Principal, Registry
from mint.rpc.auth import TokenTable, token_digest
from mint.validation.limits import Limits
from services.registry.server import build_server
from tests.keys import TEST_KEK

TOKENS = {
    "admin-token": Principal("ops", frozenset({"*"}), admin=True),
    "alice-token": Principal("alice", frozenset({"acme"})),
    "bob-token": Principal("bob", frozenset({"other"})),
    "carol-token": Principal("carol", frozenset({"acme"})),
    "evaluator-token": Principal("evaluator", frozenset({"*"}), platform=True),
}
UPLOAD_LIMIT = 64 * 1024  # small, so the oversize case stays cheap


@dataclass
class Running:
    target: str
    registry: Registry
    s3: Minio
    bucket: str

    def client(self, token: str) -> RegistryClient:
        return RegistryClient(self.target, token, retry_for_s=10)

    def snapshot(self) -> tuple[int, int]:
        """(events in the log, objects in the bucket): what a refusal must leave alone."""
        events = sum(1 for _ in self.registry.log.read_all())
        objects = sum(1 for _ in self.s3.list_objects(self.bucket, recursive=True))
        return events, objects


@pytest.fixture(scope="module")
def running(kafka: KafkaConnection, s3: Minio) -> Iterator[Running]:
    topic = f"registry-{uuid.uuid4().hex[:10]}"
    bucket = f"reg-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=3, txn_prefix=topic)
    registry = Registry(
        log, S3BlobStore(s3, bucket, TEST_KEK), Limits(max_weights_bytes=UPLOAD_LIMIT)
    )
    tokens = TokenTable((token_digest(t), p) for t, p in TOKENS.items())
    server, port = build_server(registry, tokens)
    yield Running(f"127.0.0.1:{port}", registry, s3, bucket)
    server.stop(grace=1).wait()
    log.close()


@pytest.fixture(scope="module")
def channel(running: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running.target) as ch:
        yield ch
