"""Serving an ASGI app with uvicorn on a thread of its own (its own event loop), beside
the router's gRPC server; over TLS with the router's certificate when it has one."""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.types import ASGIApp

from mint.rpc.tls import TlsFiles


class HttpServer:
    """Started on construction: the port is bound at once (a port in use fails here, and
    connections made before the loop runs wait in the backlog)."""

    def __init__(self, app: ASGIApp, address: str, tls: TlsFiles | None = None) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")  # an IPv6 address is written [::1]:8080, as gRPC takes it
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, int(port)), family=family)
        except OSError as exc:
            raise RuntimeError(f"could not bind {address} for HTTP: {exc.strerror}") from exc
        self.port: int = self._socket.getsockname()[1]
        files = tls if tls is not None and tls.has_identity else TlsFiles()
        config = uvicorn.Config(
            app,
            log_level="warning",
            log_config=None,  # its lines go through mint.logs (format, repeats) like ours
            access_log=False,
            lifespan="off",
            ssl_certfile=str(files.cert_file) if files.cert_file else None,
            ssl_keyfile=str(files.key_file) if files.key_file else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """No new connections; requests in flight get `grace_s`, then are cut."""
        self._server.config.timeout_graceful_shutdown = max(1, round(grace_s))
        self._server.should_exit = True
        self._thread.join(timeout=grace_s + 5)
        self._socket.close()
