"""The evaluator's metrics, served with /healthz on a small HTTP endpoint."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mint.probes import serve_probes


class EvaluatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.verdicts = Counter(
            "mint_evaluator_verdicts",
            "Platform evaluations recorded, by verdict",
            ["verdict"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "mint_evaluator_skipped",
            "Revisions that could not be evaluated, by reason (base: another base than the "
            "evaluator's; examples: the suite's blob is unreadable; unscorable: the scorer "
            "refused the revision or examples; refused: the registry refused the verdict)",
            ["reason"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "mint_evaluator_seconds",
            "Time to score one revision on a suite",
            registry=self.registry,
        )
        self.events = Counter(
            "mint_evaluator_events", "Events read from the log", registry=self.registry
        )
        self.degraded_gauge = Gauge(
            "mint_evaluator_degraded",
            "1 while Kafka, S3 or the registry failing holds it up",
            registry=self.registry,
        )
        self.failures = Counter(
            "mint_evaluator_failures", "Rounds that failed and were retried", registry=self.registry
        )
        self._problem: str | None = None
        self._lock = threading.Lock()

    def degraded(self, reason: str) -> None:
        with self._lock:
            self._problem = reason
        self.failures.inc()
        self.degraded_gauge.set(1)

    def recovered(self) -> None:
        with self._lock:
            self._problem = None
        self.degraded_gauge.set(0)

    def problem(self) -> str | None:
        with self._lock:
            return None if self._problem is None else f"degraded: {self._problem}"

    def serve(
        self, port: int, host: str = "0.0.0.0", draining: threading.Event | None = None
    ) -> ThreadingHTTPServer:
        return serve_probes(
            port, lambda: generate_latest(self.registry), self.problem, host, draining
        )
