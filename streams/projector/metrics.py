"""A small HTTP endpoint for the projector: /metrics (Prometheus text) and /healthz.

The consumer is not thread-safe, so the loop publishes snapshots here and the HTTP
thread only reads them.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ProjectorMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lag: dict[int, int] = {}
        self._applied = 0

    def publish(self, applied: int, lag: dict[int, int]) -> None:
        with self._lock:
            self._applied, self._lag = applied, dict(lag)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP mint_projector_events_applied_total Events projected since start.",
                "# TYPE mint_projector_events_applied_total counter",
                f"mint_projector_events_applied_total {self._applied}",
                "# HELP mint_projector_lag Records per partition not yet projected.",
                "# TYPE mint_projector_lag gauge",
                *(
                    f'mint_projector_lag{{partition="{p}"}} {n}'
                    for p, n in sorted(self._lag.items())
                ),
            ]
        return "\n".join(lines) + "\n"

    def serve(self, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, kind = metrics.render().encode(), "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    body, kind = b"ok\n", "text/plain"
                else:
                    self.send_error(404, "try /metrics or /healthz")
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # scrapes are not news
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server
