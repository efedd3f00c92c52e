"""A controller planning turn at scale: 10^6 addressable adapters, 10^4 wanted, 50 nodes.

Builds the ids of `--addressable` adapters (placement sees an adapter only once it is
wanted, so the others are ids only), a controller with `--nodes` simulated nodes (host
budgets in its fleet view), and `--wanted` groups demanded; then times planning turns
(`Controller.plan_turn`: idle wants dropped, the plan made, its difference from the
published one): the first, then `--turns` steady ones, each a simulated second in which
`--churn` of the wanted groups stop being asked for and as many new ones are, and a share
of the rest report again. Groups left alone expire after `--idle-s`, so many more groups
pass through than are ever wanted at once; the process's resident memory is printed as
they come and go. The baseline, in the same run: the same turns planned by recomputing
everything (every group ranked over every node, every node's bytes recounted:
tests/serving/placement_reference.py), which must give the same plan.

  python -m bench.controller_plan [--addressable 1000000] [--wanted 10000] [--nodes 50]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench.common import bar_chart_svg, record
from mint.backends.kafka import KafkaConnection
from mint.serving.placement import Group, NodeCapacity
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb
from services.controller.controller import Controller, ControllerConfig
from tests.serving.placement_reference import ReferencePlacement

T = TypeVar("T")
MiB = 1 << 20
TARGET_MS = 100.0


class Clock:
    """Simulated time: one planning turn a second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status: this benchmark reads Linux's")


class Demand:
    """The routers' side: which groups are asked for, and how often."""

    def __init__(self, controller: Controller, addressable: int, rng: random.Random) -> None:
        self.controller = controller
        self.ids = [f"{rng.getrandbits(128):032x}" for _ in range(addressable)]
        self.active: deque[int] = deque()  # indexes into ids, asked for longest ago first
        self.started = 0  # ids[:started] have been asked for (the ids are random)

    def group(self, i: int) -> Group:
        adapter_id = self.ids[i]
        size = (8, 16, 32)[i % 3] * MiB  # rank 16 to 64 on a 7B model, roughly
        ref = RevisionRef(adapter_id, f"t{i % 5000}/a{i}", 1, adapter_id * 2, size, "base")
        return Group.of([ref])

    def ask(self, i: int) -> None:
        hot = i % 100 == 0  # one group in a hundred: 12 requests/s, two more replicas
        self.controller.wants.note(self.group(i), 12 if hot else 1)

    def start(self, count: int) -> None:
        """Ask for `count` groups never asked for before."""
        if self.started + count > len(self.ids):
            raise SystemExit("every addressable adapter was asked for: pass fewer --turns")
        for i in range(self.started, self.started + count):
            self.active.append(i)
            self.ask(i)
        self.started += count

    def turn(self, churn: int, refresh: int) -> None:
        """`churn` groups are no longer asked for (they idle out), as many new ones are,
        and the `refresh` groups asked for longest ago report again."""
        for _ in range(churn):
            self.active.popleft()
        self.start(churn)
        for _ in range(refresh):
            i = self.active.popleft()
            self.ask(i)
            self.active.append(i)


def fleet(controller: Controller, nodes: int, budget_mib: int) -> list[NodeCapacity]:
    for n in range(nodes):
        report = pb.NodeReport(
            node=f"node-{n:02d}", base_fingerprint="base", budget_bytes=budget_mib * MiB
        )
        controller.fleet.apply(report)
    return live_nodes(controller)


def live_nodes(controller: Controller) -> list[NodeCapacity]:
    return [
        NodeCapacity(n.name, n.budget_bytes, n.base_fingerprint) for n in controller.fleet.live()
    ]


class Timings:
    """Wall and CPU milliseconds of planning turns (on a shared machine the wall time
    includes waiting for a core; the CPU time is the turn's own work)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, action: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)
        return result

    def summary(self) -> dict[str, float]:
        def p99(values: list[float]) -> float:
            return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]

        return {
            "wall_p50_ms": round(statistics.median(self.wall), 2),
            "wall_p99_ms": round(p99(self.wall), 2),
            "cpu_p50_ms": round(statistics.median(self.cpu), 2),
            "cpu_p99_ms": round(p99(self.cpu), 2),
        }


class Run:
    """A controller, its simulated fleet and routers, and what was measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.clock = args, Clock()
        self.controller = Controller(
            ControllerConfig(
                KafkaConnection("unused:9092"), silence_s=1e9, want_idle_s=args.idle_s
            ),
            self.clock,
        )
        self.rss = {"start": rss_mib()}
        self.demand = Demand(self.controller, args.addressable, random.Random(12))
        self.nodes = fleet(self.controller, args.nodes, args.budget_mib)
        self.rss["ids built"] = rss_mib()
        # Active groups report again every idle_s / 2, so only the churned ones idle
        # out, idle_s / 2 after they leave (they were asked for longest ago): with those
        # still wanted, about `--wanted` in all.
        self.active = args.wanted - int(args.churn * args.idle_s / 2)
        self.refresh = int(self.active / (args.idle_s / 2))

    def second(self) -> None:
        self.clock.now += 1.0
        self.demand.turn(self.args.churn, self.refresh)

    def first_turn(self) -> Timings:
        self.demand.start(self.active)
        for _ in range(int(self.args.idle_s)):  # the churned tail, on its way out
            self.second()
        first = Timings()
        first.time(self.controller.plan_turn)
        self.rss["after the first turn"] = rss_mib()
        return first

    def steady_turns(self) -> tuple[Timings, list[int], list[list[int]]]:
        steady, wanted, rss_by_turn = Timings(), [], []
        for turn in range(1, self.args.turns + 1):
            self.second()
            steady.time(self.controller.plan_turn)
            wanted.append(len(self.controller.wants))
            if turn % 50 == 0:
                rss_by_turn.append([turn, round(rss_mib())])
                print(f"  turn {turn}: {wanted[-1]:,} wanted, RSS {rss_by_turn[-1][1]} MiB")
        self.rss["after the churn"] = rss_mib()
        return steady, wanted, rss_by_turn

    def baseline_turns(self) -> tuple[Timings, Timings]:
        """Steady turns planned both ways from the same state, checked to agree."""
        incremental, reference = Timings(), Timings()
        for _ in range(self.args.baseline_turns):
            self.second()
            self.controller.wants.expire()
            old = ReferencePlacement(
                {n: set(refs) for n, refs in self.controller.placement.assignment.items()}
            )
            wants = list(self.controller.wants.values())
            expected = reference.time(partial(old.plan, wants, self.nodes))
            incremental.time(self.controller.plan_turn)
            if self.controller.placement.assignment != expected:
                raise RuntimeError("the incremental plan differs from the reference's")
        return incremental, reference

    def held(self) -> dict[str, int]:
        """What the controller holds, by structure."""
        placement = self.controller.placement
        return {
            "wanted": len(self.controller.wants),
            "rates": len(self.controller.wants.rates),
            "rankings": len(placement._ranks),
            "revisions placed": len(placement._held.holders),
            "intents published": sum(map(len, self.controller.published.values())),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--addressable", type=int, default=1_000_000)
    parser.add_argument("--wanted", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--budget-mib", type=int, default=8192, help="each node's host tier")
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--churn", type=int, default=100, help="groups replaced per turn")
    parser.add_argument("--idle-s", type=float, default=10.0, help="simulated want_idle_s")
    parser.add_argument("--baseline-turns", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    run = Run(args)
    first = run.first_turn()
    wanted_first = len(run.controller.wants)
    print(
        f"{args.addressable:,} addressable, {wanted_first:,} wanted, {len(run.nodes)} nodes: "
        f"first turn {first.wall[0]:,.0f} ms",
        flush=True,
    )
    steady, wanted, rss_by_turn = run.steady_turns()
    incremental, reference = run.baseline_turns()
    times, held = steady.summary(), run.held()
    old_ms, new_ms = statistics.median(reference.wall), statistics.median(incremental.wall)
    print(
        f"steady turns ({args.turns}, {args.churn} of the wanted groups replaced in each): "
        f"p50 {times['wall_p50_ms']:.1f} ms, p99 {times['wall_p99_ms']:.1f} ms "
        f"(target <= {TARGET_MS:.0f} ms); CPU p50 {times['cpu_p50_ms']:.1f}, "
        f"p99 {times['cpu_p99_ms']:.1f} ms"
    )
    print(f"  wanted: {min(wanted):,}-{max(wanted):,}; {run.demand.started:,} groups in all")
    print(
        f"  recomputing everything (the old planner), same turns: {old_ms:,.0f} ms against "
        f"{new_ms:.1f} ms ({old_ms / new_ms:,.0f}x), the same plan"
    )
    for stage, mib in run.rss.items():
        print(f"  RSS {stage}: {mib:,.0f} MiB")
    print(f"  held after the churn: {held}")

    path = record(
        "controller_plan",
        {
            "addressable": args.addressable,
            "wanted_first_turn": wanted_first,
            "wanted_steady": [min(wanted), max(wanted)],
            "groups_in_all": run.demand.started,
            "nodes": len(run.nodes),
            "node_budget_mib": args.budget_mib,
            "churn_per_turn": args.churn,
            "idle_s": args.idle_s,
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "first_turn_ms": round(first.wall[0], 1),
            "steady_turns": args.turns,
            "steady": times,
            "target": f"<= {TARGET_MS:.0f} ms",
            "reference_turn_ms": round(old_ms, 1),
            "incremental_turn_ms_same_turns": round(new_ms, 2),
            "rss_mib": {k: round(v) for k, v in run.rss.items()},
            "rss_mib_by_turn": rss_by_turn,
            "held_after_churn": held,
        },
    )
    chart = bar_chart_svg(
        "controller_plan",
        f"Planning turns: {args.addressable:,} addressable, ~{args.wanted:,} wanted, "
        f"{len(run.nodes)} nodes",
        [
            ("steady turn p50", times["wall_p50_ms"]),
            ("steady turn p99", times["wall_p99_ms"]),
            ("target", TARGET_MS),
            ("first turn", first.wall[0]),
            ("recompute everything (old)", old_ms),
        ],
        "ms",
        ",.1f",
    )
    print(f"recorded in {path} and {chart}")


if __name__ == "__main__":
    main()
