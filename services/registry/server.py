"""Build and run the registry gRPC server (health and reflection served, graceful stop)."""

from __future__ import annotations

import grpc

from mint.registry import Registry
from mint.rpc.auth import TokenTable
from mint.rpc.server import build_server as build_rpc_server
from mint.v1 import registry_pb2, registry_pb2_grpc

from .servicer import RegistryServicer

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
# Room for the largest upload chunk plus framing; uploads are chunked, so this stays small.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def build_server(
    registry: Registry, tokens: TokenTable, address: str = "127.0.0.1:0", workers: int = 16
) -> tuple[grpc.Server, int]:
    """A started server and its bound port."""
    server, port, _ = build_rpc_server(
        SERVICE_NAME,
        lambda s: registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(registry), s),
        address,
        tokens.authenticate,
        workers,
        [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    return server, port
