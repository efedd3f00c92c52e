"""The protobuf-level client for the MinT registry, which `Client` builds on.

    client = RegistryClient("127.0.0.1:50051", token="...")
    client.create_adapter("acme/tone", base_fingerprint)
    client.publish_revision("acme/tone", folder)        # a peft save_pretrained folder

It answers with protobuf messages and raises `grpc.RpcError`; `mint.Client` is the same
with typed results and exceptions. Every command gets a request id (yours, or a fresh
one). UNAVAILABLE (a partition changing owner, a broker or S3 lost) and DEADLINE_EXCEEDED
are retried with the same request, so a retry learns the first attempt's outcome and
never applies a command twice.

`target` may list several replicas ("127.0.0.1:5001,127.0.0.1:5002"). Each adapter's
commands go to the replica that last took them, and a retryable answer moves that adapter
on to the next replica: a replica that does not own the adapter's partition says so with
UNAVAILABLE, and the client walks the replicas until it meets the owner.

With `tls` (a `TlsFiles` whose `ca_file` signed the registry's certificate) the client
talks TLS and checks the registry's certificate names the host it dials; with a
certificate and key in it as well, it presents them (for a registry requiring them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from mint.rpc.tls import TlsFiles
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc

from . import build
from .build import CHUNK_BYTES, Progress, parse_ref
from .channels import open_channel, replica_options
from .retry import (
    RETRYABLE,
    Attempts,
    ReplicaChoice,
    bearer,
    new_request_id,
    replica_addresses,
)

__all__ = [
    "CHUNK_BYTES",
    "RETRYABLE",
    "RegistryClient",
    "Replicas",
    "parse_ref",
    "replica_addresses",
]
T = TypeVar("T")


class Replicas(ReplicaChoice):
    """One stub per registry replica, and which replica each adapter's commands go to."""

    def __init__(
        self, target: str, tls: TlsFiles | None = None, server_name: str | None = None
    ) -> None:
        options = replica_options(server_name)
        self.channels = [open_channel(a, tls, options) for a in replica_addresses(target)]
        self.stubs = [registry_pb2_grpc.RegistryStub(c) for c in self.channels]
        super().__init__(replica_addresses(target))

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
        self.metadata = bearer(token)
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
        attempts = Attempts(self.replicas, key, self.retry_for_s)
        while True:
            replica = attempts.replica()
            try:
                return attempt(self.replicas.stubs[replica])
            except grpc.RpcError as exc:
                pause = attempts.pause_after(replica, exc)
                if pause is None:
                    raise
                time.sleep(pause)

    def register_base(
        self,
        name: str,
        fingerprint: str,
        parameters: Mapping[str, Sequence[int]],
        request_id: str | None = None,
    ) -> pb.BaseModel:
        request = build.register_base(name, fingerprint, parameters, request_id or new_request_id())
        return self._call(lambda s: s.RegisterBaseModel, request, key=f"base/{fingerprint}")

    def create_adapter(
        self,
        ref: str,
        base_fingerprint: str,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = build.create_adapter(
            ref, base_fingerprint, labels, request_id or new_request_id()
        )
        return self._call(lambda s: s.CreateAdapter, request, key=ref)

    def publish_revision(
        self,
        ref: str,
        source: Path | str | tuple[bytes, bytes],
        expected_version: int | None = None,
        request_id: str | None = None,
        progress: Progress | None = None,
        **provenance: object,
    ) -> pb.CommandResult:
        """Upload a revision from a peft folder or (config bytes, weights bytes);
        `progress(sent, total)` is called as the weights go out."""
        config, weights = build.upload_bytes(source)
        header = build.publish_header(
            ref, config, weights, request_id or new_request_id(), expected_version, **provenance
        )
        # A stream can't be replayed: each attempt starts a new one.
        return self._retrying(
            lambda stub: stub.PublishRevision(
                build.upload_parts(header, weights, progress),
                metadata=self.metadata,
                timeout=self.timeout_s,
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
        dataset_fingerprint: str = "",
        expected_version: int | None = None,
    ) -> pb.CommandResult:
        request = build.record_evaluation(
            ref,
            revision,
            suite,
            metrics,
            passed,
            request_id or new_request_id(),
            dataset_fingerprint,
            expected_version,
        )
        return self._call(lambda s: s.RecordEvaluation, request, key=ref)

    def set_gate(
        self,
        ref: str,
        channel: str,
        required_suite: str,
        expected_version: int | None = None,
        request_id: str | None = None,
        requirement: str = "",
        threshold: float = 0.0,
        examples: bytes = b"",
    ) -> pb.CommandResult:
        """`requirement`: "any", "four_eyes" or "platform" (then `examples`, JSON lines of
        {"prompt", "continuation"}, and `threshold`, the least mean token log-prob)."""
        request = build.set_gate(
            ref,
            channel,
            required_suite,
            request_id or new_request_id(),
            expected_version,
            requirement,
            threshold,
            examples,
        )
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
        request = build.move_channel(
            ref, channel, revision, reason, request_id or new_request_id(), expected_version
        )
        return self._call(lambda s: s.MoveChannel, request, key=ref)

    def archive_adapter(
        self,
        ref: str,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = build.archive(ref, reason, request_id or new_request_id(), expected_version)
        return self._call(lambda s: s.ArchiveAdapter, request, key=ref)

    def request_update(
        self,
        ref: str,
        examples: build.UpdateExamples,
        kind: str = "examples",
        channel: str = "stable",
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = build.request_update(ref, examples, kind, channel, request_id or new_request_id())
        return self._call(lambda s: s.RequestUpdate, request, key=ref)

    def finish_update(
        self,
        ref: str,
        update_id: str,
        revision: int,
        outcome: str,
        reason: str = "",
        request_id: str | None = None,
    ) -> pb.CommandResult:
        request = build.finish_update(
            ref, update_id, revision, outcome, reason, request_id or new_request_id()
        )
        return self._call(lambda s: s.FinishUpdate, request, key=ref)

    def erase_adapter(
        self, ref: str, expected_version: int | None = None, request_id: str | None = None
    ) -> pb.CommandResult:
        request = build.erase(ref, request_id or new_request_id(), expected_version)
        return self._call(lambda s: s.EraseAdapter, request, key=ref)

    def get_adapter(self, ref: str) -> pb.Adapter:
        return self._call(lambda s: s.GetAdapter, build.get_adapter(ref), ref)

    def get_revision(self, ref: str, revision: int = 0, channel: str = "") -> pb.Revision:
        request = build.revision_request(ref, revision, channel)
        return self._call(lambda s: s.GetRevision, request, ref)

    def download_weights(self, ref: str, revision: int) -> bytes:
        """A revision's adapter_model.safetensors, whole (a retry downloads it again)."""
        request = build.revision_request(ref, revision, "")

        def attempt(stub: registry_pb2_grpc.RegistryStub) -> bytes:
            chunks = stub.DownloadWeights(request, metadata=self.metadata, timeout=self.timeout_s)
            return b"".join(chunk.data for chunk in chunks)

        return self._retrying(attempt, ref)

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
        request = build.list_page(tenant, labels, page_size, page_token)
        return self._call(lambda s: s.ListAdapters, request)

    def history(self, ref: str) -> list[pb.RecordedEvent]:
        response = self._call(lambda s: s.History, build.history(ref), ref)
        return list(response.events)

    def watch_events(
        self,
        tenant: str,
        from_offsets: Mapping[int, int] | None = None,
        until_end: bool = False,
    ) -> Iterator[pb.RecordedEvent]:
        """`tenant`'s events from `from_offsets` (partition -> next offset; none: the
        beginning) on, as they are appended (`until_end`: up to the log's end as of the
        call, then the stream ends); no deadline and no retry (the stream is the caller's
        to resume). Any replica serves it. Cancel it to stop: it is a `grpc.Call`."""
        request = build.watch(tenant, from_offsets, until_end)
        stub = random.choice(self.replicas.stubs)
        call: Iterator[pb.RecordedEvent] = stub.WatchEvents(request, metadata=self.metadata)
        return call
