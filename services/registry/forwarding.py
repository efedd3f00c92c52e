"""Reads of another replica's adapters go to that replica.

The replica that writes an adapter's partition holds its state; any other would have to
scan the whole partition from its start (seconds at a million adapters). So a read that
lands elsewhere is passed to the owner named in the partition claims, with the caller's
credentials and remaining deadline, and its answer (or its status) passed back. The owner
answers forwarded reads itself, never forwarding again; if it cannot be reached, the read
is served here the slow way rather than failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from cachetools import LRUCache

from mint import logs
from mint.client.retry import pushback_named
from mint.domain.errors import ResourceExhausted
from mint.rpc.interceptor import domain_error
from mint.rpc.tls import TlsFiles, server_name_options
from mint.v1 import registry_pb2_grpc

from .metrics import RegistryMetrics

log = logging.getLogger(__name__)

# Marks a read already forwarded once: the replica receiving it answers, whatever it owns.
FORWARDED_METADATA = "mint-forwarded"
# Of the caller's metadata, what the owner needs to authenticate and trace the read.
_PASSED_ON = frozenset({"authorization"})  # and the request id, `logs.outgoing_metadata`
PEERS_KEPT = 32  # channels kept open to other replicas (a registry has a handful)


class _Peers(LRUCache[str, grpc.Channel]):
    def popitem(self) -> tuple[str, grpc.Channel]:
        address, channel = super().popitem()
        channel.close()  # dropped from the cache: nothing else holds it
        return address, channel


class ReadForwarder:
    """Channels to the other replicas, and the one way to pass a read to one of them."""

    def __init__(
        self,
        tls: TlsFiles | None = None,
        server_name: str = "",
        metrics: RegistryMetrics | None = None,
    ) -> None:
        """`tls`: dial the replicas over TLS, verifying them against its CA; `server_name`:
        the name their certificates carry, when it is not the address dialled (a pod IP)."""
        self.tls, self.server_name = tls, server_name
        self.forwarded = (metrics or RegistryMetrics()).reads_forwarded
        self._peers = _Peers(maxsize=PEERS_KEPT)
        self._lock = threading.Lock()

    def _stub(self, address: str) -> registry_pb2_grpc.RegistryStub:
        with self._lock:
            channel = self._peers.get(address)
            if channel is None:
                options = server_name_options(self.server_name or None)
                channel = (
                    grpc.secure_channel(address, self.tls.channel_credentials(), options)
                    if self.tls is not None
                    else grpc.insecure_channel(address, options)
                )
                self._peers[address] = channel
        return registry_pb2_grpc.RegistryStub(channel)

    def forward(
        self, owner: str, method: str, request: Any, context: grpc.ServicerContext
    ) -> Any | None:
        """The owner's answer to `method(request)`, or None: answer here (the read was
        forwarded to us already, no owner is known, or the owner cannot be reached). A
        status the owner answered is raised as the domain error it maps to."""
        if not owner or _was_forwarded(context):
            return None
        call: Callable[..., Any] = getattr(self._stub(owner), method)
        try:
            answer = call(request, timeout=context.time_remaining(), metadata=_passed_on(context))
            if method == "DownloadWeights":
                answer = list(answer)  # whole here, so a failure midway is still ours to handle
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                log.info("owner %s of a read is unreachable (%s): reading here", owner, details)
                self.forwarded.labels(method, "local").inc()
                return None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # its pushback goes on with it
                raise ResourceExhausted(details, retry_after_s=pushback_named(exc)) from None
            raise domain_error(code, details) from None
        self.forwarded.labels(method, "answered").inc()
        return answer

    def close(self) -> None:
        with self._lock:
            for channel in self._peers.values():
                channel.close()
            self._peers.clear()


def _was_forwarded(context: grpc.ServicerContext) -> bool:
    return any(k == FORWARDED_METADATA for k, _ in context.invocation_metadata() or ())


def _passed_on(context: grpc.ServicerContext) -> list[tuple[str, str]]:
    kept = [(k, str(v)) for k, v in context.invocation_metadata() or () if k in _PASSED_ON]
    return [*kept, *logs.outgoing_metadata(), (FORWARDED_METADATA, "1")]
