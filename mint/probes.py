"""/metrics and /healthz over plain HTTP, for services without a gRPC server of their
own (the projector, the controller): what Prometheus scrapes and Kubernetes probes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def serve_probes(
    port: int,
    metrics: Callable[[], bytes],
    healthy: Callable[[], str | None] = lambda: None,
    host: str = "0.0.0.0",
) -> ThreadingHTTPServer:
    """Serve in a daemon thread. `healthy` returns None when all is well, else why not
    (answered with 503, so a liveness probe restarts the process)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics(), PROMETHEUS_TEXT)
            elif self.path == "/healthz":
                problem = healthy()
                body = f"{problem or 'ok'}\n".encode()
                self._answer(503 if problem else 200, body, "text/plain")
            else:
                self.send_error(404, "try /metrics or /healthz")

        def _answer(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # scrapes are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
