"""Build and run the registry gRPC server (health and reflection served, graceful stop)."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mint.registry import Registry
from mint.rpc.auth import TokenTable
from mint.rpc.interceptor import DomainInterceptor
from mint.v1 import registry_pb2, registry_pb2_grpc

from .servicer import RegistryServicer

log = logging.getLogger(__name__)
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
# Room for the largest upload chunk plus framing; uploads are chunked, so this stays small.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def build_server(
    registry: Registry, tokens: TokenTable, address: str = "127.0.0.1:0", workers: int = 16
) -> tuple[grpc.Server, int]:
    """A started server and its bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registry"),
        interceptors=[DomainInterceptor(tokens.authenticate)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(registry), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    server.start()
    return server, port
