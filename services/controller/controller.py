"""The residency controller: demand and node reports in, desired residency out.

One controller is active at a time: controllers join one consumer group on the demand
topic, which has one partition, and the member it is assigned to is active. On becoming
active it fences any previous writer (init_transactions under a shared transactional id),
reads the desired table back as its starting plan, and from then on publishes each
re-plan's difference (intents and tombstones) in one transaction.

A planning turn costs what changed since the last one, not the wanted groups times the
nodes (see `mint.serving.placement`), and what the controller keeps is bounded by the
groups in use: a group idle for `want_idle_s` is dropped (`wants.Wants`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import (
    DesiredWriter,
    ResidencyTopics,
    TableFollower,
    from_proto,
    read_table,
)
from mint.serving.fleet import FleetView
from mint.serving.placement import Group, NodeCapacity, Placement
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb

from .metrics import ControllerMetrics
from .wants import Wants

log = logging.getLogger(__name__)
Plan = dict[str, set[RevisionRef]]
Put = tuple[str, RevisionRef, bool]  # node, revision, pinned
Remove = tuple[str, RevisionRef]


@dataclass(frozen=True)
class ControllerConfig:
    kafka: KafkaConnection
    topics: ResidencyTopics = field(default_factory=ResidencyTopics)
    group_id: str = "mint-controller"
    silence_s: float = 4.0  # a node silent this long is dead: re-place its adapters
    tick_s: float = 0.5
    hot_rps: float = 5.0  # each this many requests/s adds a replica
    max_replicas: int = 3
    want_idle_s: float = 600.0  # a group not demanded this long is no longer kept placed
    session_timeout_ms: int = 6000


class Controller:
    def __init__(
        self, config: ControllerConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.fleet = FleetView(config.silence_s)
        self.placement = Placement()
        self.wants = Wants(
            self.placement, config.want_idle_s, config.hot_rps, config.max_replicas, clock
        )
        self.published: Plan = {}
        self.active = False
        self._started = time.monotonic()
        self._urgent = False
        self._writer: DesiredWriter | None = None
        self.metrics = ControllerMetrics()

    def run(self, stop: threading.Event) -> None:
        c = self.config
        demand = KafkaConsumer(
            c.topics.demand,
            **c.kafka.options(),
            group_id=c.group_id,
            auto_offset_reset="latest",
            enable_auto_commit=True,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.session_timeout_ms // 3,
        )
        status = TableFollower(c.kafka, c.topics.status)
        erasures = TableFollower(c.kafka, c.topics.erased)
        last_plan = 0.0
        try:
            while not stop.is_set():
                batches = demand.poll(timeout_ms=100)
                for _, value in status.poll(timeout_s=0):
                    if value is not None:
                        self.fleet.apply(pb.NodeReport.FromString(value))
                for adapter_id, value in erasures.poll(timeout_s=0):
                    if value is not None:  # never placed again; its intents go next turn
                        self.wants.erase(adapter_id)
                        self._urgent = True
                self._set_active(bool(demand.assignment()))
                self._observe()
                if not self.active:
                    continue
                for records in batches.values():
                    for record in records:
                        self._note(pb.DemandReport.FromString(record.value))
                settled = (
                    status.caught_up
                    and erasures.caught_up
                    and time.monotonic() - self._started > c.silence_s
                )
                due = self._urgent or time.monotonic() - last_plan >= c.tick_s
                if settled and due:
                    self._replan()
                    last_plan, self._urgent = time.monotonic(), False
        finally:
            demand.close()
            status.close()
            erasures.close()
            if self._writer is not None:
                self._writer.close()

    def _observe(self) -> None:
        m = self.metrics
        m.turned()
        m.active.set(int(self.active))
        m.live_nodes.set(len(self.fleet.live()))
        m.wanted.set(len(self.wants))
        m.hot.set(self.wants.hot)
        m.intents.set(sum(map(len, self.published.values())))

    def _set_active(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        if not active:
            log.info("standing by: another controller is active")
            return
        if self._writer is not None:  # it may have been fenced while we stood by
            self._writer.close()
        self._writer = DesiredWriter(
            self.config.kafka, self.config.topics, f"{self.config.group_id}-writer"
        )
        self._writer.activate()  # fences a previous active controller
        self.published, pinned = self._read_desired()
        self.placement.assignment = self.published
        for refs in self.published.values():
            for ref in refs:
                self.wants.keep(Group.of([ref]), ref in pinned)
        log.info("active: %d intents in the desired table", sum(map(len, self.published.values())))

    def _read_desired(self) -> tuple[Plan, set[RevisionRef]]:
        """The desired table as a plan, and the revisions pinned in it."""
        plan: Plan = {}
        pinned = set()
        for value in read_table(self.config.kafka, self.config.topics.desired).values():
            intent = pb.ResidencyIntent.FromString(value)
            ref = from_proto(intent.revision)
            plan.setdefault(intent.node, set()).add(ref)
            if intent.pinned:
                pinned.add(ref)
        return plan, pinned

    def _note(self, report: pb.DemandReport) -> None:
        for demand in report.demands:
            self.wants.note(Group.of(from_proto(r) for r in demand.revisions), demand.requests)
            self._urgent |= demand.missing

    def plan_turn(self) -> tuple[list[Put], list[Remove]]:
        """One planning turn: idle groups dropped, the plan made over the live nodes, and
        its difference from the published plan (which it then replaces: a write that
        fails ends the process, and a new active controller reads the table back)."""
        expired = self.wants.expire()
        self.metrics.expired.inc(expired)
        nodes = [
            NodeCapacity(n.name, n.budget_bytes, n.base_fingerprint) for n in self.fleet.live()
        ]
        plan = self.placement.plan(nodes)
        put = [
            (node, ref, self._pinned(ref))
            for node, refs in plan.items()
            for ref in sorted(refs - self.published.get(node, set()))
        ]
        remove = [
            (node, ref)
            for node, refs in self.published.items()
            for ref in sorted(refs - plan.get(node, set()))
        ]
        self.published = {n: r for n, r in plan.items() if r}
        return put, remove

    def _pinned(self, ref: RevisionRef) -> bool:
        want = self.wants.get(Group.of([ref]).key)
        return want is not None and want.pinned

    def _replan(self) -> None:
        put, remove = self.plan_turn()
        if put or remove:
            if self._writer is None:  # re-plans run only while active, with a writer
                raise RuntimeError("re-planning without a writer: not the active controller")
            self._writer.write(put, remove, term=int(self._started))
            log.info("re-planned: %d intents added, %d removed", len(put), len(remove))
            self.metrics.replans.inc()
            self.metrics.changes.labels("put").inc(len(put))
            self.metrics.changes.labels("remove").inc(len(remove))
