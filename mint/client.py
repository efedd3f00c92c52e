"""The Python client for the MinT registry.

    client = RegistryClient("127.0.0.1:50051", token="...")
    client.create_adapter("acme/tone", base_fingerprint)
    client.publish_revision("acme/tone", folder)        # a peft save_pretrained folder

Every command gets a request id (yours, or a fresh one). UNAVAILABLE (a partition
changing owner, a broker or S3 lost) and DEADLINE_EXCEEDED are retried with the same
request, so a retry learns the first attempt's outcome and never applies a command twice.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc
from mint.v1.events_pb2 import Shape

CHUNK_BYTES = 1024 * 1024
# Safe to send again: every command carries its request id, and reads change nothing.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
T = TypeVar("T")


def parse_ref(text: str) -> pb.AdapterRef:
    tenant, _, name = text.partition("/")
    return pb.AdapterRef(tenant=tenant, name=name)


class RegistryClient:
    def __init__(
        self, target: str, token: str, timeout_s: float = 30.0, retry_for_s: float = 30.0
    ) -> None:
        # `target` may list several replicas ("ipv4:127.0.0.1:5001,127.0.0.1:5002"): calls
        # are spread round-robin, and a retry after UNAVAILABLE reaches another replica.
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.lb_policy_name", "round_robin")]
        )
        self.stub = registry_pb2_grpc.RegistryStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.timeout_s, self.retry_for_s = timeout_s, retry_for_s

    def close(self) -> None:
        self.channel.close()

    def _call(self, rpc: Callable[..., T], request: object) -> T:
        """Call, retrying a retryable status with the very same request (same request id)."""
        return self._retrying(lambda: rpc(request, metadata=self.metadata, timeout=self.timeout_s))

    def _retrying(self, attempt: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            try:
                return attempt()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() + delay > deadline:
                    raise
                # Jittered: retries of clients in step would meet the same replica of a
                # round-robin channel every time, never the one that owns the adapter.
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 2.0)

    def register_base(
        self,
        name: str,
        fingerprint: str,
        parameters: Mapping[str, Sequence[int]],
        request_id: str | None = None,
    ) -> pb.BaseModel:
        base = pb.BaseModel(
            name=name,
            fingerprint=fingerprint,
            parameters={k: Shape(dims=list(v)) for k, v in parameters.items()},
        )
        request = pb.RegisterBaseModelRequest(base=base, request_id=request_id or uuid.uuid4().hex)
        return self._call(self.stub.RegisterBaseModel, request)

    def create_adapter(
        self,
        ref: str,
        base_fingerprint: str,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = pb.CreateAdapterRequest(
            ref=parse_ref(ref),
            base_fingerprint=base_fingerprint,
            labels=dict(labels or {}),
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._call(self.stub.CreateAdapter, request)

    def publish_revision(
        self,
        ref: str,
        source: Path | tuple[bytes, bytes],
        expected_version: int | None = None,
        request_id: str | None = None,
        **provenance: object,
    ) -> pb.CommandResult:
        """Upload a revision from a peft folder or (config bytes, weights bytes)."""
        if isinstance(source, Path):
            config = (source / ADAPTER_CONFIG).read_bytes()
            weights = (source / ADAPTER_WEIGHTS).read_bytes()
        else:
            config, weights = source
        header = pb.PublishRevisionHeader(
            ref=parse_ref(ref),
            request_id=request_id or uuid.uuid4().hex,
            adapter_config=config,
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            weights_size=len(weights),
            **provenance,  # type: ignore[arg-type]
        )
        if expected_version is not None:
            header.expected_version = expected_version

        def parts() -> Iterator[pb.PublishRevisionRequest]:
            yield pb.PublishRevisionRequest(header=header)
            for start in range(0, len(weights), CHUNK_BYTES):
                yield pb.PublishRevisionRequest(weights_chunk=weights[start : start + CHUNK_BYTES])

        # A stream can't be replayed: each attempt starts a new one.
        return self._retrying(
            lambda: self.stub.PublishRevision(
                parts(), metadata=self.metadata, timeout=self.timeout_s
            )
        )

    def record_evaluation(
        self,
        ref: str,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = pb.RecordEvaluationRequest(
            ref=parse_ref(ref),
            revision=revision,
            suite=suite,
            metrics=dict(metrics),
            passed=passed,
            request_id=request_id or uuid.uuid4().hex,
        )
        return self._call(self.stub.RecordEvaluation, request)

    def set_gate(
        self,
        ref: str,
        channel: str,
        required_suite: str,
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = pb.SetChannelGateRequest(
            ref=parse_ref(ref),
            channel=channel,
            required_suite=required_suite,
            request_id=request_id or uuid.uuid4().hex,
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return self._call(self.stub.SetChannelGate, request)

    def move_channel(
        self,
        ref: str,
        channel: str,
        revision: int,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = pb.MoveChannelRequest(
            ref=parse_ref(ref),
            channel=channel,
            revision=revision,
            reason=reason,
            request_id=request_id or uuid.uuid4().hex,
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return self._call(self.stub.MoveChannel, request)

    def get_adapter(self, ref: str) -> pb.Adapter:
        return self._call(self.stub.GetAdapter, pb.GetAdapterRequest(ref=parse_ref(ref)))

    def get_revision(self, ref: str, revision: int = 0, channel: str = "") -> pb.Revision:
        request = pb.GetRevisionRequest(ref=parse_ref(ref))
        if channel:
            request.channel = channel
        else:
            request.revision = revision
        return self._call(self.stub.GetRevision, request)

    def list_adapters(
        self, tenant: str, labels: Mapping[str, str] | None = None, page_size: int = 100
    ) -> Iterator[pb.AdapterSummary]:
        token = ""
        while True:
            page = self._call(
                self.stub.ListAdapters,
                pb.ListAdaptersRequest(
                    tenant=tenant, labels=dict(labels or {}), page_size=page_size, page_token=token
                ),
            )
            yield from page.adapters
            token = page.next_page_token
            if not token:
                return

    def history(self, ref: str) -> list[pb.RecordedEvent]:
        response = self._call(self.stub.History, pb.HistoryRequest(ref=parse_ref(ref)))
        return list(response.events)
