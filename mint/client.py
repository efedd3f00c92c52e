"""The Python client for the MinT registry.

    client = RegistryClient("127.0.0.1:50051", token="...")
    client.create_adapter("acme/tone", base_fingerprint)
    client.publish_revision("acme/tone", folder)        # a peft save_pretrained folder

Every command gets a request id (yours, or a fresh one). UNAVAILABLE (a partition
changing owner, a broker or S3 lost) and DEADLINE_EXCEEDED are retried with the same
request, so a retry learns the first attempt's outcome and never applies a command twice.

`target` may list several replicas ("127.0.0.1:5001,127.0.0.1:5002"). Each adapter's
commands go to the replica that last took them, and a retryable answer moves that adapter
on to the next replica: a replica that does not own the adapter's partition says so with
UNAVAILABLE, and the client walks the replicas until it meets the owner.

With `tls` (a `TlsFiles` whose `ca_file` signed the registry's certificate) the client
talks TLS and checks the registry's certificate names the host it dials; with a
certificate and key in it as well, it presents them (for a registry requiring them).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from cachetools import LRUCache

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.rpc.tls import TlsFiles, server_name_options
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


def replica_addresses(target: str) -> list[str]:
    """ "a:1,b:2" (or gRPC's "ipv4:a:1,b:2") -> ["a:1", "b:2"]; one name stays one target."""
    listed = target.removeprefix("ipv4:")
    return listed.split(",") if "," in listed else [target]


class Replicas:
    """One stub per registry replica, and which replica each adapter's commands go to."""

    def __init__(
        self, target: str, tls: TlsFiles | None = None, server_name: str | None = None
    ) -> None:
        # A single name may stand for many replicas (a Kubernetes Service): spread over them.
        options = [("grpc.lb_policy_name", "round_robin"), *server_name_options(server_name)]
        addresses = replica_addresses(target)
        if tls is None:
            self.channels = [grpc.insecure_channel(a, options=options) for a in addresses]
        else:
            credentials = tls.channel_credentials()
            self.channels = [grpc.secure_channel(a, credentials, options) for a in addresses]
        self.stubs = [registry_pb2_grpc.RegistryStub(c) for c in self.channels]
        self._chosen: LRUCache[str, int] = LRUCache(maxsize=100_000)
        self._lock = threading.Lock()

    def choose(self, key: str) -> int:
        with self._lock:
            if key not in self._chosen:  # spread adapters not seen yet
                self._chosen[key] = random.randrange(len(self.stubs))
            return self._chosen[key]

    def move_on(self, key: str, failed: int) -> None:
        """`failed` gave a retryable answer for `key`: its next command tries the next one."""
        with self._lock:
            if self._chosen.get(key) == failed:
                self._chosen[key] = (failed + 1) % len(self.stubs)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


class RegistryClient:
    def __init__(
        self,
        target: str,
        token: str,
        timeout_s: float = 30.0,
        retry_for_s: float = 30.0,
        tls: TlsFiles | None = None,
        server_name: str | None = None,
    ) -> None:
        """`server_name`: the name the registry's certificate must carry, when it is not
        the host in `target` (e.g. through a port-forward to 127.0.0.1)."""
        self.replicas = Replicas(target, tls, server_name)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.timeout_s, self.retry_for_s = timeout_s, retry_for_s

    def close(self) -> None:
        self.replicas.close()

    def _call(
        self,
        rpc: Callable[[registry_pb2_grpc.RegistryStub], Callable[..., T]],
        request: object,
        key: str = "",
    ) -> T:
        """Call, retrying a retryable status with the very same request (same request id)."""
        return self._retrying(
            lambda stub: rpc(stub)(request, metadata=self.metadata, timeout=self.timeout_s), key
        )

    def _retrying(self, attempt: Callable[[registry_pb2_grpc.RegistryStub], T], key: str) -> T:
        """`key` (the adapter's ref) picks the replica; a retryable answer moves it on."""
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.1
        while True:
            replica = self.replicas.choose(key)
            try:
                return attempt(self.replicas.stubs[replica])
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                self.replicas.move_on(key, replica)
                if time.monotonic() + delay > deadline:
                    raise
                # Jittered, so that clients failing together do not retry together.
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
        return self._call(lambda s: s.RegisterBaseModel, request, key=f"base/{fingerprint}")

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
        return self._call(lambda s: s.CreateAdapter, request, key=ref)

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
            lambda stub: stub.PublishRevision(
                parts(), metadata=self.metadata, timeout=self.timeout_s
            ),
            ref,
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
        return self._call(lambda s: s.RecordEvaluation, request, key=ref)

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
        return self._call(lambda s: s.SetChannelGate, request, key=ref)

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
        return self._call(lambda s: s.MoveChannel, request, key=ref)

    def get_adapter(self, ref: str) -> pb.Adapter:
        return self._call(lambda s: s.GetAdapter, pb.GetAdapterRequest(ref=parse_ref(ref)), ref)

    def get_revision(self, ref: str, revision: int = 0, channel: str = "") -> pb.Revision:
        request = pb.GetRevisionRequest(ref=parse_ref(ref))
        if channel:
            request.channel = channel
        else:
            request.revision = revision
        return self._call(lambda s: s.GetRevision, request, ref)

    def list_adapters(
        self, tenant: str, labels: Mapping[str, str] | None = None, page_size: int = 100
    ) -> Iterator[pb.AdapterSummary]:
        """Every adapter of `tenant` carrying `labels`, in name order, page by page."""
        token = ""
        while True:
            page = self.list_page(tenant, labels, page_size, token)
            yield from page.adapters
            token = page.next_page_token
            if not token:
                return

    def list_page(
        self,
        tenant: str,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> pb.ListAdaptersResponse:
        """One page, from the first or after `page_token` (a previous page's
        `next_page_token`; empty on the last page)."""
        request = pb.ListAdaptersRequest(
            tenant=tenant, labels=dict(labels or {}), page_size=page_size, page_token=page_token
        )
        return self._call(lambda s: s.ListAdapters, request)

    def history(self, ref: str) -> list[pb.RecordedEvent]:
        response = self._call(lambda s: s.History, pb.HistoryRequest(ref=parse_ref(ref)), ref)
        return list(response.events)
