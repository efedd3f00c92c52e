"""Build the registry gRPC server (health and reflection served, TLS or not, a stop that
drains)."""

from __future__ import annotations

import logging

from mint.registry import Registry
from mint.rpc.auth import TokenTable
from mint.rpc.server import DRAIN_S, RpcServer
from mint.rpc.server import build_server as build_rpc_server
from mint.rpc.tls import TlsFiles
from mint.v1 import registry_pb2, registry_pb2_grpc

from .budget import DOWNLOADS, UPLOADS, ByteBudget, MiB, machine_sized_budget
from .forwarding import ReadForwarder
from .metrics import RegistryMetrics
from .servicer import RegistryServicer

log = logging.getLogger(__name__)
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
# Room for the largest upload chunk plus framing; uploads are chunked, so this stays small.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def build_server(
    registry: Registry,
    tokens: TokenTable,
    address: str = "127.0.0.1:0",
    workers: int = 16,
    max_upload_bytes_in_flight: int | None = None,
    max_download_bytes_in_flight: int | None = None,
    *,
    tls: TlsFiles | None = None,
    health_port: int = 0,
    drain_s: float = DRAIN_S,
    forwarder: ReadForwarder | None = None,
    metrics: RegistryMetrics | None = None,
) -> tuple[RpcServer, int]:
    """A started server and its bound port (TLS with `tls`; health also on
    `health_port`; `stop()` drains for `drain_s` first; reads of other replicas' adapters
    go to them through `forwarder`; budget figures into `metrics`). Uploads and downloads
    in flight hold at most `max_upload_bytes_in_flight` and `max_download_bytes_in_flight`
    bytes (by default a share of the machine's memory each: budget.py)."""
    largest = machine_sized_budget(registry.limits.max_weights_bytes)
    metrics = metrics or RegistryMetrics()
    uploads = ByteBudget(
        max_upload_bytes_in_flight or largest, UPLOADS, metrics.uploads_refused.inc
    )
    downloads = ByteBudget(
        max_download_bytes_in_flight or largest, DOWNLOADS, metrics.downloads_refused.inc
    )
    for budget in (uploads, downloads):
        log.info("%ss in flight may hold %.0f MiB", budget.direction.noun, budget.max_bytes / MiB)
    metrics.watch_budgets(uploads, downloads)
    servicer = RegistryServicer(registry, uploads, downloads, forwarder)
    server = build_rpc_server(
        SERVICE_NAME,
        lambda s: registry_pb2_grpc.add_RegistryServicer_to_server(servicer, s),
        address,
        tokens.authenticate,
        workers,
        [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        tls=tls,
        health_port=health_port,
        drain_s=drain_s,
        observe=metrics.observe_call,
    )
    return server, server.port
