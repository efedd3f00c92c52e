"""The trainer's metrics, served with /healthz and /readyz on a small HTTP endpoint."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import ThreadingHTTPServer

from mint.probes import serve_probes


class TrainerMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._seconds = 0.0
        self._failures = 0
        self._problem: str | None = None  # why the trainer is degraded, if it is

    def applied(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            self._seconds += seconds

    def degraded(self, reason: str) -> None:
        """A round failed (Kafka, S3 or the registry unreachable); it is retried."""
        with self._lock:
            self._failures += 1
            self._problem = reason

    def recovered(self) -> None:
        with self._lock:
            self._problem = None

    def problem(self) -> str | None:
        with self._lock:
            return None if self._problem is None else f"degraded: {self._problem}"

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP mint_trainer_updates_total Update requests applied, by outcome.",
                "# TYPE mint_trainer_updates_total counter",
                *(
                    f'mint_trainer_updates_total{{outcome="{o}"}} {n}'
                    for o, n in sorted(self._outcomes.items())
                ),
                "# HELP mint_trainer_update_seconds_total Time spent applying them.",
                "# TYPE mint_trainer_update_seconds_total counter",
                f"mint_trainer_update_seconds_total {self._seconds:.3f}",
                "# HELP mint_trainer_degraded 1 while Kafka, S3 or registry failures hold it up.",
                "# TYPE mint_trainer_degraded gauge",
                f"mint_trainer_degraded {int(self._problem is not None)}",
                "# HELP mint_trainer_failures_total Rounds that failed and were retried.",
                "# TYPE mint_trainer_failures_total counter",
                f"mint_trainer_failures_total {self._failures}",
            ]
        return "\n".join(lines) + "\n"

    def serve(
        self, port: int, host: str = "0.0.0.0", draining: threading.Event | None = None
    ) -> ThreadingHTTPServer:
        """/metrics, /healthz and /readyz (503 once `draining`, the stop event, is set)."""
        return serve_probes(
            port, lambda: self.render().encode(), self.problem, host=host, draining=draining
        )
