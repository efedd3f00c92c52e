"""`AsyncClient`: `Client` for asyncio (grpc.aio), the same calls awaited, the same typed
results, exceptions, request ids and retries.

    async with mint.AsyncClient("127.0.0.1:50051", router="...", token="...") as client:
        await client.promote("acme/tone", "stable", 2)
        async for chunk in client.generate_stream("Hello", "acme/tone@stable"):
            print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc
import grpc.aio

from mint.eventlog.port import Recorded
from mint.rpc.tls import TlsFiles
from mint.v1 import inference_pb2_grpc, registry_pb2_grpc

from . import build, read
from .build import Adapters, Progress, PublishSource, UpdateExamples
from .channels import open_aio_channel, replica_options, router_options
from .errors import raising_mint_errors
from .retry import Attempts, ReplicaChoice, bearer, new_request_id, replica_addresses
from .rollback import rollback_target
from .types import (
    Adapter,
    AdapterSummary,
    BaseModel,
    CommandResult,
    Event,
    Generation,
    GenerationChunk,
    Page,
    Revision,
    Sampling,
    Score,
)
from .watch import AsyncWatch, scan_async

if TYPE_CHECKING:  # the stubs' async types exist for type checkers only
    from mint.v1.inference_pb2_grpc import InferenceAsyncStub
    from mint.v1.registry_pb2_grpc import RegistryAsyncStub as Stub

T = TypeVar("T")


class AsyncClient:
    """The arguments are `Client`'s. Make it inside the event loop that uses it."""

    def __init__(
        self,
        registry: str | None = None,
        *,
        router: str | None = None,
        token: str,
        timeout_s: float = 30.0,
        retry_for_s: float = 30.0,
        tls: TlsFiles | None = None,
        server_name: str | None = None,
        router_server_name: str | None = None,
    ) -> None:
        options = replica_options(server_name)
        addresses = replica_addresses(registry) if registry else []
        self._channels = [open_aio_channel(a, tls, options) for a in addresses]
        self._stubs: list[Stub] = [registry_pb2_grpc.RegistryStub(c) for c in self._channels]
        self._replicas = ReplicaChoice(addresses)
        self._router = (
            open_aio_channel(router, tls, router_options(router_server_name)) if router else None
        )
        self.timeout_s, self.retry_for_s = timeout_s, retry_for_s
        self._metadata = bearer(token)

    async def close(self) -> None:
        for channel in [*self._channels, *filter(None, [self._router])]:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def _inference(self) -> InferenceAsyncStub:
        if self._router is None:
            raise ValueError("this client has no router: pass router='HOST:PORT'")
        return inference_pb2_grpc.InferenceStub(self._router)

    async def _retrying(self, attempt: Callable[[Stub], Awaitable[T]], key: str) -> T:
        """As `RegistryClient._retrying`: `key` picks the replica, a retryable answer moves
        it on, and the very same request is sent again."""
        if not self._stubs:
            raise ValueError("this client has no registry: pass registry='HOST:PORT'")
        attempts = Attempts(self._replicas, key, self.retry_for_s)
        while True:
            replica = attempts.replica()
            try:
                return await attempt(self._stubs[replica])
            except grpc.RpcError as exc:
                pause = attempts.pause_after(replica, exc)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    async def _command(
        self, rpc: Callable[[Stub], Callable[..., Awaitable[T]]], request: object, key: str
    ) -> T:
        return await self._retrying(
            lambda stub: rpc(stub)(request, metadata=self._metadata, timeout=self.timeout_s), key
        )

    # --- commands ------------------------------------------------------------------------

    async def register_base(
        self,
        name: str,
        fingerprint: str,
        parameters: Mapping[str, Sequence[int]],
        *,
        request_id: str | None = None,
    ) -> BaseModel:
        rid = request_id or new_request_id()
        request = build.register_base(name, fingerprint, parameters, rid)
        with raising_mint_errors(rid):
            answer = await self._command(
                lambda s: s.RegisterBaseModel, request, f"base/{fingerprint}"
            )
        return read.base_model(answer)

    async def create_adapter(
        self,
        ref: str,
        base_fingerprint: str,
        *,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        request = build.create_adapter(ref, base_fingerprint, labels, rid)
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.CreateAdapter, request, ref)
        return read.command_result(answer, rid)

    async def publish_revision(
        self,
        ref: str,
        source: PublishSource,
        *,
        parents: Sequence[int] = (),
        training_run_id: str = "",
        dataset_fingerprints: Sequence[str] = (),
        hyperparameters: Mapping[str, str] | None = None,
        tool_versions: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        progress: Progress | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        config, weights = await asyncio.to_thread(build.upload_bytes, source)
        header = build.publish_header(
            ref,
            config,
            weights,
            rid,
            expected_version,
            parents=list(parents),
            training_run_id=training_run_id,
            dataset_fingerprints=list(dataset_fingerprints),
            hyperparameters=dict(hyperparameters or {}),
            tool_versions=dict(tool_versions or {}),
        )
        with raising_mint_errors(rid):
            answer = await self._retrying(
                lambda stub: stub.PublishRevision(
                    build.upload_parts(header, weights, progress),  # a new stream each time
                    metadata=self._metadata,
                    timeout=self.timeout_s,
                ),
                ref,
            )
        return read.command_result(answer, rid)

    async def record_evaluation(
        self,
        ref: str,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        *,
        dataset_fingerprint: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        request = build.record_evaluation(
            ref, revision, suite, metrics, passed, rid, dataset_fingerprint, expected_version
        )
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.RecordEvaluation, request, ref)
        return read.command_result(answer, rid)

    async def set_gate(
        self,
        ref: str,
        channel: str,
        required_suite: str,
        *,
        expected_version: int | None = None,
        request_id: str | None = None,
        requirement: str = "",
        threshold: float = 0.0,
        examples: bytes = b"",
    ) -> CommandResult:
        """As `Client.set_gate`."""
        rid = request_id or new_request_id()
        request = build.set_gate(
            ref, channel, required_suite, rid, expected_version, requirement, threshold, examples
        )
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.SetChannelGate, request, ref)
        return read.command_result(answer, rid)

    async def promote(
        self,
        ref: str,
        channel: str,
        revision: int,
        *,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        request = build.move_channel(ref, channel, revision, reason, rid, expected_version)
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.MoveChannel, request, ref)
        return read.command_result(answer, rid)

    async def request_update(
        self,
        ref: str,
        examples: UpdateExamples,
        *,
        kind: str = "examples",
        channel: str = "stable",
        request_id: str | None = None,
    ) -> CommandResult:
        """Ask for `ref` to be updated from `examples` (JSON bytes, or objects with a
        "prompt" and a "completion"; feedback's carry a "rating" of 1 or -1). The
        trainer trains revision n+1 from them, evaluates it and promotes it to `channel`
        if it passes the gate; `request_id` is the update's id, which its revision's
        provenance names."""
        rid = request_id or new_request_id()
        request = build.request_update(ref, examples, kind, channel, rid)
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.RequestUpdate, request, ref)
        return read.command_result(answer, rid)

    async def rollback(
        self,
        ref: str,
        channel: str,
        revision: int | None = None,
        *,
        reason: str = "rollback",
        request_id: str | None = None,
    ) -> CommandResult:
        expected = None
        if revision is None:
            revision, expected = rollback_target(ref, channel, await self.history(ref), request_id)
        return await self.promote(
            ref,
            channel,
            revision,
            reason=reason,
            expected_version=expected,
            request_id=request_id,
        )

    async def archive(
        self,
        ref: str,
        *,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        request = build.archive(ref, reason, rid, expected_version)
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.ArchiveAdapter, request, ref)
        return read.command_result(answer, rid)

    async def erase(
        self, ref: str, *, expected_version: int | None = None, request_id: str | None = None
    ) -> CommandResult:
        """Erase for good (see Client.erase)."""
        rid = request_id or new_request_id()
        request = build.erase(ref, rid, expected_version)
        with raising_mint_errors(rid):
            answer = await self._command(lambda s: s.EraseAdapter, request, ref)
        return read.command_result(answer, rid)

    # --- reads ---------------------------------------------------------------------------

    async def get_adapter(self, ref: str) -> Adapter:
        request = build.get_adapter(ref)
        with raising_mint_errors():
            return read.adapter(await self._command(lambda s: s.GetAdapter, request, ref))

    async def get_revision(self, ref: str, at: int | str) -> Revision:
        revision, channel = (at, "") if isinstance(at, int) else (0, at)
        request = build.revision_request(ref, revision, channel)
        with raising_mint_errors():
            return read.revision(await self._command(lambda s: s.GetRevision, request, ref))

    async def list_adapters(
        self, tenant: str, *, labels: Mapping[str, str] | None = None, page_size: int = 100
    ) -> AsyncIterator[AdapterSummary]:
        token = ""
        while True:
            page = await self.list_page(
                tenant, labels=labels, page_size=page_size, page_token=token
            )
            for summary in page.adapters:
                yield summary
            token = page.next_page_token
            if not token:
                return

    async def list_page(
        self,
        tenant: str,
        *,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        request = build.list_page(tenant, labels, page_size, page_token)
        with raising_mint_errors():
            return read.page(await self._command(lambda s: s.ListAdapters, request, ""))

    async def history(self, ref: str) -> list[Event]:
        request = build.history(ref)
        with raising_mint_errors():
            answer = await self._command(lambda s: s.History, request, ref)
        return [read.event(e) for e in answer.events]

    def watch(self, tenant: str, from_offsets: Mapping[int, int] | None = None) -> AsyncWatch:
        """`tenant`'s events from `from_offsets` on: `async for` over it, `close()` it."""
        if not self._stubs:
            raise ValueError("this client has no registry: pass registry='HOST:PORT'")

        def open_stream(offsets: dict[int, int]) -> object:
            stub = self._stubs[self._replicas.choose(f"watch/{tenant}")]
            return stub.WatchEvents(build.watch(tenant, offsets), metadata=self._metadata)

        return AsyncWatch(open_stream, from_offsets, self.retry_for_s)

    def scan(self, tenant: str) -> AsyncIterator[Recorded]:
        """`tenant`'s events as stored, up to the log's end as of the call (`Client.scan`):
        `async for` over it."""
        if not self._stubs:
            raise ValueError("this client has no registry: pass registry='HOST:PORT'")

        def open_stream(offsets: dict[int, int]) -> object:
            stub = self._stubs[self._replicas.choose(f"watch/{tenant}")]
            request = build.watch(tenant, offsets, until_end=True)
            return stub.WatchEvents(request, metadata=self._metadata)

        return scan_async(open_stream, self.retry_for_s)

    # --- inference (through the router) ---------------------------------------------------

    async def generate(
        self,
        prompt: str,
        adapters: Adapters = (),
        sampling: Sampling | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Generation:
        request = build.generate_request(prompt, adapters, sampling)
        with raising_mint_errors():
            answer = await self._inference.Generate(
                request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
            )
        return read.generation(answer)

    async def generate_stream(
        self,
        prompt: str,
        adapters: Adapters = (),
        sampling: Sampling | None = None,
        *,
        timeout_s: float | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """The completion as it decodes; leaving the loop early cancels the generation."""
        request = build.generate_request(prompt, adapters, sampling)
        call = self._inference.GenerateStream(
            request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
        )
        try:
            with raising_mint_errors():
                async for message in call:
                    yield read.chunk(message)
        finally:
            call.cancel()

    async def score(
        self,
        prompt: str,
        continuation: str,
        adapters: Adapters = (),
        *,
        timeout_s: float | None = None,
    ) -> Score:
        request = build.score_request(prompt, continuation, adapters)
        with raising_mint_errors():
            answer = await self._inference.Score(
                request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
            )
        return read.score(answer)
