"""Building a MinT gRPC server: the interceptor, health and reflection, TLS or not, a
health port of its own, and a stop that drains.

Health is served twice from one `HealthServicer`: on the service's port (beside the
service, for clients and load balancers that check there) and on a plaintext port of its
own, served by its own small thread pool, for Kubernetes probes. So a probe never waits
behind request workers that long uploads or generations keep busy, and it needs no
client certificate (the kubelet's gRPC probe speaks no TLS); that port serves nothing
but health.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mint.domain.errors import FailedPrecondition

from .interceptor import Authenticate, DomainInterceptor, ObserveCall
from .tls import TlsFiles

# NOT_SERVING this long before a stopping server refuses new calls. None in-process; the
# services' processes take theirs from settings (`drain_s`, 2 s unless set).
DRAIN_S = 0.0
HEALTH_WORKERS = 2


@dataclass
class RpcServer:
    """A started server and its health port. `stop()` drains: NOT_SERVING first, new
    calls still taken for `drain_s` (while load balancers and probes notice), then no
    new calls and `grace` for those in flight; the health port answers to the end."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    health_server: grpc.Server
    health_port: int
    drain_s: float = DRAIN_S
    _draining_since: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def start_draining(self) -> None:
        """Report NOT_SERVING ("" and the service) from now on; calls are still taken."""
        with self._lock:
            if self._draining_since is None:
                self._draining_since = time.monotonic()
                self.health.enter_graceful_shutdown()  # later set() calls are ignored

    def stop(self, grace: float | None = None) -> threading.Event:
        """Drain and stop; returns once stopped (a set event, as `grpc.Server.stop`
        returns one)."""
        self.start_draining()
        since = self._draining_since or time.monotonic()
        time.sleep(max(0.0, since + self.drain_s - time.monotonic()))
        self.server.stop(grace).wait()
        self.health_server.stop(None).wait()
        stopped = threading.Event()
        stopped.set()
        return stopped


def build_server(
    service_name: str,
    add_servicer: Callable[[grpc.Server], None],
    address: str,
    authenticate: Authenticate,
    workers: int = 16,
    options: list[tuple[str, int]] | None = None,
    *,
    tls: TlsFiles | None = None,
    health_port: int = 0,
    drain_s: float = DRAIN_S,
    observe: ObserveCall | None = None,
) -> RpcServer:
    """A started server (SERVING) on `address`, over TLS when given `tls`, with health
    also on `health_port` of the same host (0: a free one). Every call but health and
    reflection is authenticated with `authenticate`, and its end told to `observe`."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=service_name),
        interceptors=[DomainInterceptor(authenticate, observe)],
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
    port = _bind(server, address, tls)
    health_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HEALTH_WORKERS, thread_name_prefix="health")
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
    host = address.rpartition(":")[0]
    bound_health_port = _bind(health_server, f"{host}:{health_port}", None)
    health_server.start()
    server.start()
    return RpcServer(server, port, health_servicer, health_server, bound_health_port, drain_s)


def _bind(server: grpc.Server, address: str, tls: TlsFiles | None) -> int:
    _check_free(address)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError:  # grpc's "Failed to bind", with its own line on stderr
        port = 0
    if port == 0:
        raise FailedPrecondition(
            f"cannot listen on {address}: the port is in use, or the host is not this "
            "machine's; pick another (--port, --health-port) or stop what holds it"
        )
    return port


def _check_free(address: str) -> None:
    """Refuse a port something listens on before gRPC tries it: gRPC binds with
    SO_REUSEPORT (it would share a port with another gRPC server) and writes a line of its
    own about a failed bind."""
    host, _, port = address.rpartition(":")
    if port == "0":
        return
    host = host.strip("[]") or "0.0.0.0"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise FailedPrecondition(
                    f"cannot listen on {address}: the port is in use; pick another (--port, "
                    "--health-port) or stop what holds it"
                ) from None
            # anything else (a host not this machine's): gRPC's bind reports it
