"""The Registry gRPC servicer: protobuf in, one application call, protobuf out.

Authentication and error mapping happen in the interceptor, not here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from mint.domain.errors import InvalidArgument, ResourceExhausted
from mint.domain.names import tenant as tenant_name
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
MAX_OFFSET = 2**63 - 1  # Kafka's offsets are signed 64-bit
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
        if not header.weights_sha256:
            raise InvalidArgument(
                "weights_sha256 is required: the sha256 of adapter_model.safetensors in "
                "lower-case hex, checked against the bytes received"
            )
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
                Upload(header.adapter_config, weights, header.weights_sha256),
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
        at = convert.revision_at(request)
        adapter = self.registry.get(current_principal(), convert.ref_from_pb(request.ref))
        found = adapter.resolve(at) if isinstance(at, str) else adapter.revision(at)
        return convert.revision_to_pb(found)

    def DownloadWeights(
        self, request: pb.GetRevisionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WeightsChunk]:
        theirs = self._at_owner("GetRevision", request, context)
        if theirs is not None:  # another replica's: its chunks are held here while sent
            with self.downloads.reserve(theirs.weights_size):
                chunks = self._at_owner("DownloadWeights", request, context)
                if chunks is not None:
                    yield from chunks
                    return
        adapter, revision = self.registry.revision_at(
            current_principal(), convert.ref_from_pb(request.ref), convert.revision_at(request)
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
        tenant, labels = request.tenant, dict(request.labels)
        tenant_name(tenant)
        principal.require_tenant(tenant)  # before the token: no hints to outsiders
        page = self.registry.list_adapters(
            principal,
            tenant,
            labels,
            page_token.decode(request.page_token, tenant, labels),
            min(request.page_size or DEFAULT_PAGE, MAX_PAGE),  # larger asks get the most
        )
        after = page.next_after
        token = page_token.encode(after, tenant, labels) if after is not None else ""
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
        tenant_name(request.tenant)
        principal.require_tenant(request.tenant)
        checkpoint = self._checked_offsets(request.from_offsets)
        # A watch holds a server thread while it lasts: bound them, so watchers can never
        # take every thread from commands.
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{MAX_WATCHES} watches are open already; retry later",
                retry_after_s=RETRY_AFTER_S,
            )
        try:
            yield from self._watch(request, checkpoint, context)
        finally:
            self._watch_slots.release()

    def _checked_offsets(self, offsets: Mapping[int, int]) -> dict[int, int]:
        """A watch's starting offsets, refused unless each names a partition of the log
        and an offset Kafka can hold."""
        partitions = self.registry.log.partitions
        for partition, offset in offsets.items():
            if partition >= partitions or offset > MAX_OFFSET:
                raise InvalidArgument(
                    f"from_offsets names partition {partition} at offset {offset}; the log "
                    f"has partitions 0 to {partitions - 1} and offsets up to {MAX_OFFSET}: "
                    "pass offsets a watch or scan gave you"
                )
        return dict(offsets)

    def _watch(
        self,
        request: pb.WatchEventsRequest,
        checkpoint: dict[int, int],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.RecordedEvent]:
        prefix = f"{request.tenant}/"
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
