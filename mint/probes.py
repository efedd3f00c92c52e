"""/metrics, /healthz and /readyz over plain HTTP: what Prometheus scrapes and Kubernetes
probes. Every other path is 404.

The stream processors and the controller (no gRPC server of their own) serve all three
(`serve_probes`): /healthz (liveness) answers 503 when the service is stuck, so that it
is restarted; /readyz (readiness) answers 503 then too, and from the moment it starts
draining (its stop event is set), so that a rollout sees it go before it exits.

The gRPC servers' health is gRPC (their health port); their metrics port serves
/metrics, and the router's and the nodes' a /healthz that says the process answers
(`serve_metrics`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
Answer = tuple[int, bytes, str]  # status, body, content type
Route = Callable[[], Answer]


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

    routes = {
        "/metrics": lambda: (200, metrics(), PROMETHEUS_TEXT),
        "/healthz": lambda: _state(healthy()),
        "/readyz": lambda: _state(not_ready()),
    }
    return _serve(port, host, routes)


def serve_metrics(
    port: int, registry: CollectorRegistry, host: str = "0.0.0.0", healthz: bool = False
) -> ThreadingHTTPServer:
    """/metrics of `registry` in a daemon thread, and with `healthz` a /healthz that
    answers 200 while the process does."""
    routes: dict[str, Route] = {
        "/metrics": lambda: (200, generate_latest(registry), PROMETHEUS_TEXT)
    }
    if healthz:
        routes["/healthz"] = lambda: _state(None)
    return _serve(port, host, routes)


def _state(problem: str | None) -> Answer:
    return 503 if problem else 200, f"{problem or 'ok'}\n".encode(), "text/plain"


def _serve(port: int, host: str, routes: Mapping[str, Route]) -> ThreadingHTTPServer:
    paths = ", ".join(routes)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(urlsplit(self.path).path)  # a scrape may add ?name[]=…
            if route is None:
                self.send_error(404, f"try {paths}")
                return
            code, body, kind = route()
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
