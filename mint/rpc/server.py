"""Building a MinT gRPC server: the interceptor, health and reflection, one bound port."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .interceptor import Authenticate, DomainInterceptor


def build_server(
    service_name: str,
    add_servicer: Callable[[grpc.Server], None],
    address: str,
    authenticate: Authenticate,
    workers: int = 16,
    options: list[tuple[str, int]] | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started server, its bound port and its health servicer (SERVING). Every call but
    health and reflection is authenticated with `authenticate`."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=service_name),
        interceptors=[DomainInterceptor(authenticate)],
        options=options or [],
    )
    add_servicer(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    server.start()
    return server, port, health_servicer
