"""Latency of the smallest and the largest size side by side: issue 12's command and
ListAdapters ratios.

Measured one size after the other, those ratios moved between 0.9x and 1.6x from run to
run on a 2-core machine: in the minutes between the two sizes the machine changed (the
broker compacting a million snapshots, the page cache writing gigabytes back) more than
the number of adapters changed a command. Here a replica of each size serves at once
and each round sends one request to each, the order reversed every other round, so both
sizes meet the same machine at the same moments; what still differs between them is the
replica, its state and its topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from bench.scale_figures import Figure, Run, latencies, write_listed_catalog
from bench.scale_fill import LISTED_TENANT
from bench.scale_world import TOKEN, CommandLoop, Replica, Sample, percentiles_ms
from mint.client import RegistryClient

WARM_UP = 20  # requests of each kind per size, not timed: connections, first reads
PAGE_SIZE = 100

T = TypeVar("T")


def paired_latency(runs: dict[int, Run], commands: int, pages: int) -> dict[int, Figure]:
    """For each size: `commands` MoveChannel commands on random adapters and `pages`
    first pages of the listed tenant, interleaved with the other sizes' requests."""
    sizes = sorted(runs)
    replicas: dict[int, Replica] = {}
    clients: dict[int, RegistryClient] = {}
    try:
        for size in sizes:
            run = runs[size]
            write_listed_catalog(run)
            replicas[size] = run.replica("paired")
            run.started(replicas[size])
            clients[size] = RegistryClient(replicas[size].address, TOKEN)
        loops = {s: CommandLoop(replicas[s], runs[s].layout, runs[s].rng) for s in sizes}

        def command(size: int) -> Sample:
            return loops[size].command(runs[size].rng.randrange(runs[size].layout.adapters))

        def page(size: int) -> float:
            began = time.perf_counter()
            clients[size].list_page(LISTED_TENANT, page_size=PAGE_SIZE)
            return time.perf_counter() - began

        interleaved(sizes, WARM_UP, command)
        interleaved(sizes, WARM_UP, page)
        samples = interleaved(sizes, commands, command)
        times = interleaved(sizes, pages, page)
    finally:
        for c in clients.values():
            c.close()
        for r in replicas.values():
            r.stop()
    return {
        size: {
            "commands": latencies(samples[size]),
            "list_page": {"pages": len(times[size]), **percentiles_ms(times[size])},
        }
        for size in sizes
    }


def interleaved(sizes: Sequence[int], count: int, call: Callable[[int], T]) -> dict[int, list[T]]:
    """`count` rounds of one call per size, the order reversed every other round (so
    neither size always follows the other)."""
    found: dict[int, list[T]] = {size: [] for size in sizes}
    for round_ in range(count):
        for size in sizes if round_ % 2 == 0 else reversed(sizes):
            found[size].append(call(size))
    return found
