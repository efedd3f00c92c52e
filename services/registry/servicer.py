"""The Registry gRPC servicer: protobuf in, one application call, protobuf out.

Authentication and error mapping happen in the interceptor, not here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from mint.domain.errors import InvalidArgument, ResourceExhausted
from mint.registry import Outcome, Registry, Upload
from mint.rpc.interceptor import current_principal
from mint.v1 import registry_pb2 as pb
from mint.v1 import registry_pb2_grpc

from . import convert, page_token
from .budget import RETRY_AFTER_S, ByteBudget, held_in_transit
from .forwarding import ReadForwarder
from .uploads import receive_weights

DEFAULT_PAGE, MAX_PAGE = 100, 1000  # as registry.proto says
MAX_WATCHES = 4  # of the server's 16 threads
DOWNLOAD_CHUNK = 1024 * 1024  # under gRPC's 4 MiB message limit


def _version(message: Any) -> int | None:
    return message.expected_version if message.HasField("expected_version") else None


def _result(outcome: Outcome) -> pb.CommandResult:
    r = outcome.result
    return pb.CommandResult(
        adapter=convert.adapter_to_pb(outcome.adapter),
        first_version=r.first_version,
        last_version=r.last_version,
        duplicate=r.duplicate,
    )


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(
        self,
        registry: Registry,
        uploads: ByteBudget,
        downloads: ByteBudget,
        forwarder: ReadForwarder | None = None,
    ) -> None:
        self.registry, self.uploads, self.downloads = registry, uploads, downloads
        self.forwarder = forwarder or ReadForwarder()
        self._watch_slots = threading.BoundedSemaphore(MAX_WATCHES)

    def RegisterBaseModel(
        self, request: pb.RegisterBaseModelRequest, context: grpc.ServicerContext
    ) -> pb.BaseModel:
        base = request.base
        shapes = {k: tuple(int(d) for d in v.dims) for k, v in base.parameters.items()}
        registered = self.registry.register_base(
            current_principal(), base.name, base.fingerprint, shapes, request.request_id
        )
        return convert.base_to_pb(registered)

    def CreateAdapter(
        self, request: pb.CreateAdapterRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.create_adapter(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.base_fingerprint,
                request.request_id,
                request.method or "lora",
                dict(request.labels),
            )
        )

    def PublishRevision(
        self, request_iterator: Iterator[pb.PublishRevisionRequest], context: grpc.ServicerContext
    ) -> pb.CommandResult:
        header = self._upload_header(request_iterator)
        self.registry.check_command(
            current_principal(), convert.ref_from_pb(header.ref), header.request_id
        )
        # Admitted before its body is read; the weights live only inside the reservation.
        with self.uploads.reserve(held_in_transit(header.weights_size)):
            return self._publish(header, receive_weights(request_iterator, header.weights_size))

    def _upload_header(
        self, parts: Iterator[pb.PublishRevisionRequest]
    ) -> pb.PublishRevisionHeader:
        first = next(parts, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the upload must start with a PublishRevisionHeader")
        header: pb.PublishRevisionHeader = first.header
        limit = self.registry.limits.max_weights_bytes
        if header.weights_size > limit:
            raise ResourceExhausted(
                f"declared weights_size {header.weights_size:,} bytes "
                f"exceeds the limit of {limit:,}"
            )
        return header

    def _publish(self, header: pb.PublishRevisionHeader, weights: bytes) -> pb.CommandResult:
        return _result(
            self.registry.publish_revision(
                current_principal(),
                convert.ref_from_pb(header.ref),
                Upload(header.adapter_config, weights, header.weights_sha256 or None),
                header.request_id,
                _version(header),
                tuple(header.parents),
                header.training_run_id,
                tuple(header.dataset_fingerprints),
                dict(header.hyperparameters),
                dict(header.tool_versions),
            )
        )

    def RecordEvaluation(
        self, request: pb.RecordEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.record_evaluation(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.revision,
                request.suite,
                dict(request.metrics),
                request.passed,
                request.request_id,
                request.dataset_fingerprint,
                _version(request),
            )
        )

    def SetChannelGate(
        self, request: pb.SetChannelGateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.set_gate(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.channel,
                request.required_suite,
                request.request_id,
                _version(request),
                request.requirement,
                request.threshold,
                request.examples,
            )
        )

    def MoveChannel(
        self, request: pb.MoveChannelRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.move_channel(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.channel,
                request.revision,
                request.request_id,
                request.reason,
                _version(request),
            )
        )

    def ArchiveAdapter(
        self, request: pb.ArchiveAdapterRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.archive(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.reason,
                request.request_id,
                _version(request),
            )
        )

    def RequestUpdate(
        self, request: pb.RequestUpdateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.request_update(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.examples,
                request.request_id,
                request.kind or "examples",
                request.channel or "stable",
            )
        )

    def FinishUpdate(
        self, request: pb.FinishUpdateRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.finish_update(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.update_id,
                request.revision,
                request.outcome,
                request.request_id,
                request.reason,
            )
        )

    def EraseAdapter(
        self, request: pb.EraseAdapterRequest, context: grpc.ServicerContext
    ) -> pb.CommandResult:
        return _result(
            self.registry.erase(
                current_principal(),
                convert.ref_from_pb(request.ref),
                request.request_id,
                _version(request),
            )
        )

    def _at_owner(self, method: str, request: Any, context: grpc.ServicerContext) -> Any | None:
        """The owning replica's answer to a read of another replica's adapter (None:
        answer here)."""
        owner = self.registry.read_elsewhere(current_principal(), convert.ref_from_pb(request.ref))
        return self.forwarder.forward(owner, method, request, context)

    def GetAdapter(
        self, request: pb.GetAdapterRequest, context: grpc.ServicerContext
    ) -> pb.Adapter:
        if (answer := self._at_owner("GetAdapter", request, context)) is not None:
            return answer  # type: ignore[no-any-return]
        adapter = self.registry.get(current_principal(), convert.ref_from_pb(request.ref))
        return convert.adapter_to_pb(adapter)

    def GetRevision(
        self, request: pb.GetRevisionRequest, context: grpc.ServicerContext
    ) -> pb.Revision:
        if (answer := self._at_owner("GetRevision", request, context)) is not None:
            return answer  # type: ignore[no-any-return]
        adapter = self.registry.get(current_principal(), convert.ref_from_pb(request.ref))
        if request.WhichOneof("at") == "channel":
            return convert.revision_to_pb(adapter.resolve(request.channel))
        return convert.revision_to_pb(adapter.revision(request.revision))

    def DownloadWeights(
        self, request: pb.GetRevisionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WeightsChunk]:
        if (chunks := self._at_owner("DownloadWeights", request, context)) is not None:
            yield from chunks
            return
        at = request.channel if request.WhichOneof("at") == "channel" else request.revision
        adapter, revision = self.registry.revision_at(
            current_principal(), convert.ref_from_pb(request.ref), at
        )
        # Admitted before the blob is read; the weights live only inside the reservation.
        with self.downloads.reserve(held_in_transit(revision.weights_size)):
            data = self.registry.weights_of(adapter, revision)
            for start in range(0, len(data), DOWNLOAD_CHUNK):
                yield pb.WeightsChunk(data=data[start : start + DOWNLOAD_CHUNK])

    def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.ServicerContext
    ) -> pb.ListAdaptersResponse:
        principal = current_principal()
        principal.require_tenant(request.tenant)  # before the token: no hints to outsiders
        page = self.registry.list_adapters(
            principal,
            request.tenant,
            dict(request.labels),
            page_token.decode(request.page_token),
            min(request.page_size or DEFAULT_PAGE, MAX_PAGE),  # larger asks get the most
        )
        token = page_token.encode(page.next_after) if page.next_after is not None else ""
        return pb.ListAdaptersResponse(
            adapters=[convert.summary_to_pb(a) for a in page.adapters], next_page_token=token
        )

    def History(
        self, request: pb.HistoryRequest, context: grpc.ServicerContext
    ) -> pb.HistoryResponse:
        if (answer := self._at_owner("History", request, context)) is not None:
            return answer  # type: ignore[no-any-return]
        recorded = self.registry.history(current_principal(), convert.ref_from_pb(request.ref))
        return pb.HistoryResponse(events=[convert.recorded_to_pb(r) for r in recorded])

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RecordedEvent]:
        principal = current_principal()
        principal.require_tenant(request.tenant)
        # A watch holds a server thread while it lasts: bound them, so watchers can never
        # take every thread from commands.
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{MAX_WATCHES} watches are open already; retry later",
                retry_after_s=RETRY_AFTER_S,
            )
        try:
            yield from self._watch(request, context)
        finally:
            self._watch_slots.release()

    def _watch(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RecordedEvent]:
        prefix = f"{request.tenant}/"
        checkpoint = dict(request.from_offsets)
        if request.until_end:  # a scan: what the log holds now, then the stream ends
            for recorded in self.registry.log.read_all(checkpoint):
                if recorded.envelope.stream_id.startswith(prefix):
                    yield convert.recorded_to_pb(recorded)
                if not context.is_active():
                    return
            return
        while context.is_active():
            for recorded in self.registry.log.subscribe(checkpoint, idle_timeout_s=1.0):
                checkpoint[recorded.position.partition] = recorded.position.offset + 1
                if recorded.envelope.stream_id.startswith(prefix):
                    yield convert.recorded_to_pb(recorded)
                if not context.is_active():
                    return
