"""/metrics, /healthz and /readyz over plain HTTP, for services without a gRPC server of
their own (the projector, the controller): what Prometheus scrapes and Kubernetes probes.

/healthz (liveness) answers 503 when the service is stuck, so that it is restarted;
/readyz (readiness) answers 503 then too, and from the moment it starts draining (its
stop event is set), so that a rollout sees it go before it exits."""

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
    draining: threading.Event | None = None,
) -> ThreadingHTTPServer:
    """Serve in a daemon thread. `healthy` returns None when all is well, else why not
    (answered with 503, so a liveness probe restarts the process). `draining` is set
    when the service starts stopping (the event SIGTERM sets)."""

    def not_ready() -> str | None:
        return "draining" if draining is not None and draining.is_set() else healthy()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics(), PROMETHEUS_TEXT)
            elif self.path == "/healthz":
                self._state(healthy())
            elif self.path == "/readyz":
                self._state(not_ready())
            else:
                self.send_error(404, "try /metrics, /healthz or /readyz")

        def _state(self, problem: str | None) -> None:
            body = f"{problem or 'ok'}\n".encode()
            self._answer(503 if problem else 200, body, "text/plain")

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
