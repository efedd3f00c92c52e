"""The projector's metrics, served with /healthz on a small HTTP endpoint.

The consumer is not thread-safe, so the loop publishes snapshots here and the HTTP
thread only reads them.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from mint.probes import serve_probes


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
        return serve_probes(port, lambda: self.render().encode(), host=host)
