"""A tiny gRPC service on `mint.rpc.server.build_server`, for testing what every MinT
server shares (TLS, authentication, health, draining) without Kafka or S3: `Who` answers
the authenticated caller's name, after waiting for `release` when asked to block."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mint.rpc.interceptor import Authenticate, current_principal
from mint.rpc.server import RpcServer, build_server
from mint.rpc.tls import TlsFiles

SERVICE = "test.Echo"
WHO = f"/{SERVICE}/Who"
BLOCK = b"block"


@dataclass
class Echo:
    release: threading.Event = field(default_factory=threading.Event)
    started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == BLOCK:
            self.started.release()
            self.release.wait(timeout=30)
        return current_principal().name.encode()

    def add_to(self, server: grpc.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(self.who)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Who": handler}),)
        )


def serve(
    echo: Echo,
    authenticate: Authenticate,
    tls: TlsFiles | None = None,
    workers: int = 4,
    drain_s: float = 0.0,
) -> RpcServer:
    return build_server(
        SERVICE,
        echo.add_to,
        "127.0.0.1:0",
        authenticate,
        workers,
        tls=tls,
        drain_s=drain_s,
    )


def who(channel: grpc.Channel) -> Callable[..., bytes]:
    return channel.unary_unary(WHO)


def health_status(port: int, service: str = "", timeout: float = 1.0) -> int:
    """The status the plaintext health endpoint on `port` answers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
        return int(stub.Check(request, timeout=timeout).status)
