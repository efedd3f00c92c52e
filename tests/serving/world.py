"""A published fleet of adapters for serving tests: registered through the registry on
the real Kafka and S3, projected into S3 by the projector, with PEFT folders kept as the
correctness reference."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_residency import ResidencyTopics, TableFollower
from mint.backends.s3_blobs import S3BlobStore
from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Principal, Registry, Upload
from mint.rpc.auth import TokenTable, token_digest
from mint.serving.fleet import FleetView
from mint.tokenizer import VOCAB_SIZE
from mint.v1 import residency_pb2
from streams.projector.runner import rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
SERVICE_TOKEN = "router-service-token"  # what routers call nodes with
ALICE_AUTH = (("authorization", "Bearer alice-token"),)
EVE_AUTH = (("authorization", "Bearer eve-token"),)


def serving_tokens() -> TokenTable:
    """alice (tenant acme), eve (tenant other) and the routers' service token."""
    return TokenTable(
        [
            (token_digest("alice-token"), ALICE),
            (token_digest("eve-token"), Principal("eve", frozenset({"other"}))),
            (token_digest(SERVICE_TOKEN), Principal("router", frozenset(), service=True)),
        ]
    )


class AuthenticatedStub:
    """A stub whose every call sends `metadata` (the caller's token)."""

    def __init__(self, stub: object, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, method: str) -> Callable[..., Any]:
        return functools.partial(getattr(self._stub, method), metadata=self._metadata)


def base_config() -> Any:
    return tiny_llama_config(vocab=VOCAB_SIZE)  # what a node builds with --base-seed 0


def rid() -> str:
    return uuid.uuid4().hex


def train(folder: Path, seed: int, base_seed: int = 0, rank: int = 4) -> Upload:
    """A LoRA strong enough to change greedy choices, saved by peft into `folder`."""
    lora = attach_lora(build_base(base_config(), seed=base_seed), rank=rank, seed=seed)
    with torch.no_grad():
        for p in lora.parameters():
            if p.requires_grad:
                p.mul_(8)
    lora.save_pretrained(str(folder))
    return Upload((folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes())


@dataclass
class World:
    kafka: KafkaConnection
    s3: Minio
    bucket: str
    log: KafkaEventLog
    registry: Registry
    topics: ResidencyTopics
    folders: dict[tuple[str, int], Path] = field(default_factory=dict)
    fingerprint: str = ""

    def publish(self, name: str, folder: Path, seed: int, base: str | None = None) -> int:
        """Create acme/<name> if needed and publish one revision; `latest` follows it."""
        ref = AdapterRef("acme", name)
        if not any(k[0] == name for k in self.folders):
            self.registry.create_adapter(ALICE, ref, base or self.fingerprint, rid())
        upload = train(folder, seed)
        result = self.registry.publish_revision(ALICE, ref, upload, rid())
        revision = len(result.adapter.revisions)
        self.registry.move_channel(ALICE, ref, "latest", revision, rid())
        self.folders[(name, revision)] = folder
        return revision

    def publish_foreign(self, name: str, folder: Path) -> None:
        """acme/<name> on another base with the very same shapes (weights differ)."""
        other = build_base(base_config(), seed=1)
        other_fp = fingerprint(other)
        shapes = {k: tuple(v.shape) for k, v in other.state_dict().items()}
        self.registry.register_base(OPS, "tiny-other", other_fp, shapes, rid())
        ref = AdapterRef("acme", name)
        self.registry.create_adapter(ALICE, ref, other_fp, rid())
        self.registry.publish_revision(ALICE, ref, train(folder, 5, base_seed=1), rid())
        self.registry.move_channel(ALICE, ref, "latest", 1, rid())

    def project(self) -> None:
        rebuild(self.log, S3Sink(self.s3, self.bucket, blobs_bucket=self.bucket, kek=TEST_KEK))

    def wait_for_reports(
        self, done: Callable[[FleetView], bool], timeout_s: float = 60.0
    ) -> FleetView:
        fleet = FleetView()
        follower = TableFollower(self.kafka, self.topics.status)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for _, value in follower.poll(0.2):
                    if value is not None:
                        fleet.apply(residency_pb2.NodeReport.FromString(value))
                if follower.caught_up and done(fleet):
                    return fleet
        finally:
            follower.close()
        raise AssertionError(f"the fleet never got there; last reports: {fleet.nodes}")


def new_world(kafka: KafkaConnection, s3: Minio) -> World:
    name = f"srv-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, name, partitions=2, txn_prefix=name)
    registry = Registry(log, S3BlobStore(s3, name, TEST_KEK))
    base = build_base(base_config(), seed=0)
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    world = World(kafka, s3, name, log, registry, ResidencyTopics(name))
    world.fingerprint = fingerprint(base)
    registry.register_base(OPS, "tiny", world.fingerprint, shapes, rid())
    world.topics.create(kafka)
    return world
