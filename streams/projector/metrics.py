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
        self._failures = 0
        self._skipped = 0
        self._problem: str | None = None  # why the projector is degraded, if it is

    def publish(self, applied: int, lag: dict[int, int]) -> None:
        with self._lock:
            self._applied, self._lag = applied, dict(lag)

    def degraded(self, reason: str) -> None:
        """A round failed (Kafka or S3 unreachable); the loop retries with backoff."""
        with self._lock:
            self._failures += 1
            self._problem = reason

    def skipped(self) -> None:
        """A record no registry wrote was skipped."""
        with self._lock:
            self._skipped += 1

    def recovered(self) -> None:
        with self._lock:
            self._problem = None

    def problem(self) -> str | None:
        """None when projecting normally, else why not (what /healthz answers)."""
        with self._lock:
            return None if self._problem is None else f"degraded: {self._problem}"

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
                "# HELP mint_projector_degraded 1 while Kafka or S3 failures hold it up.",
                "# TYPE mint_projector_degraded gauge",
                f"mint_projector_degraded {int(self._problem is not None)}",
                "# HELP mint_projector_failures_total Rounds that failed and were retried.",
                "# TYPE mint_projector_failures_total counter",
                f"mint_projector_failures_total {self._failures}",
                "# HELP mint_projector_foreign_records_total Records skipped as no registry's "
                "events (corrupt or forged): run mint.audit verify.",
                "# TYPE mint_projector_foreign_records_total counter",
                f"mint_projector_foreign_records_total {self._skipped}",
            ]
        return "\n".join(lines) + "\n"

    def serve(
        self, port: int, host: str = "0.0.0.0", draining: threading.Event | None = None
    ) -> ThreadingHTTPServer:
        """/metrics, /healthz and /readyz (503 once `draining`, the stop event, is set)."""
        return serve_probes(
            port, lambda: self.render().encode(), self.problem, host=host, draining=draining
        )
