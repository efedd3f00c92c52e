"""Prometheus metrics of the router."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mint_router_requests_total",
            "Requests by method and status",
            ["method", "code"],
            registry=r,
        )
        self.hits = Counter(
            "mint_router_hits_total", "Requests whose adapters were resident somewhere", registry=r
        )
        self.misses = Counter(
            "mint_router_misses_total", "Requests that needed a cold start", registry=r
        )
        self.retries = Counter(
            "mint_router_retries_total", "Requests sent again after a node failed", registry=r
        )
        self.cold_start = Histogram(
            "mint_router_cold_start_seconds",
            "Waiting for placement and load on a miss",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.latency = Histogram(
            "mint_router_request_seconds",
            "Request latency through the router",
            ["method"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.live_nodes = Gauge("mint_router_live_nodes", "Nodes reporting", registry=r)
        self.http_requests = Counter(
            "mint_router_http_requests_total",
            "Requests to the OpenAI-compatible HTTP API by path and HTTP status (a stream "
            "counts when it starts; its generation is in mint_router_requests_total)",
            ["path", "status"],
            registry=r,
        )
