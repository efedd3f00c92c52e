"""Prometheus metrics of an inference node (served on /metrics by prometheus_client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Tiers: device (the slots, on the GPU or the CPU), host (every resident revision),
        # disk (the local disk cache, if any).
        self.resident = Gauge(
            "mint_node_resident_adapters", "Adapter revisions held, per tier", ["tier"], registry=r
        )
        self.resident_bytes = Gauge(
            "mint_node_resident_bytes", "Bytes of adapters held, per tier", ["tier"], registry=r
        )
        self.budget_bytes = Gauge(
            "mint_node_budget_bytes", "Memory budget for adapters, per tier", ["tier"], registry=r
        )
        self.slots = Gauge(
            "mint_node_device_slots",
            "Device slots per rank class: total, filled (holding an adapter) and leased "
            "(by running requests)",
            ["rank", "state"],
            registry=r,
        )
        self.device = Info(
            "mint_node_device", "Where the base and the slots live, and their dtype", registry=r
        )
        self.promotions = Counter(
            "mint_node_promotions_total",
            "Copies of a host-resident adapter into a device slot for a request",
            registry=r,
        )
        self.load_seconds = Histogram(
            "mint_node_load_seconds",
            "Residency intent to servable: S3 GET, sha256, parse, copy into slots",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.loads = Counter(
            "mint_node_loads_total", "Load attempts by outcome", ["outcome"], registry=r
        )
        self.reserve_takes = Counter(
            "mint_node_host_reserve_takes_total",
            "Loads by whether the host reserve had written memory ready for their bytes "
            "(hit) or they faulted new pages in (miss)",
            ["outcome"],
            registry=r,
        )
        self.evictions = Counter("mint_node_evictions_total", "Adapters evicted", registry=r)
        self.requests = Counter(
            "mint_node_requests_total",
            "Requests by method and gRPC code",
            ["method", "code"],
            registry=r,
        )
        self.misses = Counter(
            "mint_node_misses_total", "Requests naming an adapter not resident here", registry=r
        )
        self.batch_size = Histogram(
            "mint_node_batch_size",
            "Requests in each step of the running batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.latency = Histogram(
            "mint_node_request_seconds",
            "Request latency",
            ["method"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.records_dropped = Counter(
            "mint_node_response_records_dropped_total",
            "Response records not written to the responses topic (queue full or Kafka "
            "failing): those outputs cannot be reproduced by id",
            registry=r,
        )

    def count_reserve_take(self, hit: bool) -> None:
        self.reserve_takes.labels("hit" if hit else "miss").inc()
