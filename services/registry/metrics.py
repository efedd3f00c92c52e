"""Prometheus metrics of a registry replica (/metrics on `metrics_port`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reads_forwarded = Counter(
            "mint_registry_reads_forwarded_total",
            "Reads of another replica's adapters, by method and outcome (answered: by the "
            "owner; local: the owner was unreachable, so read here from the partition)",
            ["method", "outcome"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "mint_registry_partitions_owned",
            "Partitions of the events topic this replica writes",
            registry=r,
        )

    def count_owned(self, owned: Callable[[], set[int]]) -> None:
        self.partitions_owned.set_function(lambda: len(owned()))
