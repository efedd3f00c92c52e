"""What the controller keeps is bounded by the groups in use: idle wants expire (pinned
ones do not), rates cool without reports, and after many groups come and go the
controller and its placement hold only the live ones. Pure: an injected clock, nodes fed
to the fleet view directly, no Kafka (the controller's Kafka side is in
test_controller.py)."""

from __future__ import annotations

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import to_proto
from mint.serving.placement import Group
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb
from services.controller.controller import Controller, ControllerConfig

IDLE_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ref(i: int) -> RevisionRef:
    return RevisionRef(f"id{i}", f"acme/a{i}", 1, f"{i:064x}", 1000, "base")


def demand(*refs: RevisionRef, requests: int = 1) -> pb.DemandReport:
    return pb.DemandReport(
        router="r", demands=[pb.Demand(revisions=[to_proto(r) for r in refs], requests=requests)]
    )


def controller(clock: Clock, nodes: int = 3) -> Controller:
    config = ControllerConfig(
        KafkaConnection("unused:9092"), want_idle_s=IDLE_S, hot_rps=5, max_replicas=3
    )
    made = Controller(config, clock)
    for i in range(nodes):
        report = pb.NodeReport(node=f"n{i}", base_fingerprint="base", budget_bytes=10**9)
        made.fleet.apply(report, now=float("inf"))  # never silent
    return made


def placed(c: Controller) -> set[RevisionRef]:
    return {r for refs in c.published.values() for r in refs}


def test_an_idle_want_expires_and_its_intents_are_removed_at_the_next_turn() -> None:
    clock = Clock()
    c = controller(clock)
    c._note(demand(ref(1)))
    c._note(demand(ref(2)))
    put, _ = c.plan_turn()
    assert {r for _, r, _ in put} == {ref(1), ref(2)}
    clock.now += IDLE_S / 2
    c._note(demand(ref(2)))  # demanded again: its idle time starts over
    clock.now += IDLE_S / 2
    c._note(demand(ref(3)))  # (a report before the turn does not hide what lapsed)
    _, remove = c.plan_turn()
    assert [r for _, r in remove] == [ref(1)], "only the one idle for want_idle_s goes"
    assert {w.group for w in c.wants.values()} == {Group.of([ref(2)]), Group.of([ref(3)])}
    assert set(c.wants.rates) == {Group.of([ref(i)]).key for i in (2, 3)}, "its rate went too"
    assert placed(c) == {ref(2), ref(3)}
    assert c.metrics.expired._value.get() == 1


def test_an_erased_adapter_leaves_the_plan_at_the_next_turn_and_is_never_placed_again() -> None:
    """Pinned, stacked with another, demanded again or read back: once erased, no group
    holding it is placed (the node has dropped it already; its intents go too)."""
    c = controller(Clock())
    c._note(demand(ref(1)))
    c._note(demand(ref(1), ref(2)))  # a stack with it
    c.wants.keep(Group.of([ref(3)]), pinned=True)
    c.wants.keep(Group.of([ref(1)]), pinned=True)
    c.plan_turn()
    assert placed(c) == {ref(1), ref(2), ref(3)}
    c.wants.erase(ref(1).adapter_id)
    c._note(demand(ref(1), requests=100))
    c.wants.keep(Group.of([ref(1)]), pinned=True)
    _, remove = c.plan_turn()
    assert {r for _, r in remove} == {ref(1), ref(2)}
    assert placed(c) == {ref(3)} and set(c.wants.rates) == set()


def test_a_pinned_want_does_not_expire() -> None:
    clock = Clock()
    c = controller(clock)
    c.wants.keep(Group.of([ref(1)]), pinned=True)  # a pinned intent read back
    c.wants.keep(Group.of([ref(2)]), pinned=False)
    c.plan_turn()
    clock.now += 10 * IDLE_S
    c.plan_turn()
    assert [w.group for w in c.wants.values()] == [Group.of([ref(1)])]
    assert placed(c) == {ref(1)}


def test_a_hot_want_cools_down_without_reports() -> None:
    clock = Clock()
    c = controller(clock)
    for _ in range(6):
        c._note(demand(ref(1), requests=40))
    (want,) = c.wants.values()
    assert want.replicas == 3 and c.wants.hot == 1
    c.plan_turn()
    assert len([n for n, refs in c.published.items() if ref(1) in refs]) == 3
    clock.now += 8  # no report for 8 s: the rate halves each second after the first
    c.plan_turn()
    assert want.replicas == 1 and c.wants.hot == 0
    assert Group.of([ref(1)]).key in c.wants.rates, "cooled, not forgotten"


def test_after_many_groups_come_and_go_only_the_live_ones_are_held() -> None:
    clock = Clock()
    c = controller(clock, nodes=5)
    asked: dict[int, float] = {}
    for i in range(3000):  # 3,000 groups, a new one each second, 60 s idle: ~60 live
        c._note(demand(ref(i), requests=i % 20))
        if i % 4 == 0:
            c._note(demand(ref(i), ref(i + 1)))  # stacks too
        asked[i] = clock.now
        clock.now += 1.0
        c.plan_turn()
    live = [i for i, at in asked.items() if at + IDLE_S > clock.now]
    assert len(live) == IDLE_S - 1
    keys = {Group.of([ref(i)]).key for i in live} | {
        Group.of([ref(i), ref(i + 1)]).key for i in live if i % 4 == 0
    }
    assert {w.group.key for w in c.wants.values()} == keys
    assert set(c.wants.rates) <= keys and len(c.wants._idle) == len(keys)
    assert set(c.placement.wants) == keys and len(c.placement._ranks) == len(keys)
    wanted = {r for i in live for r in (ref(i), ref(i + 1))}
    assert set(c.placement._held.holders) <= wanted
    assert placed(c) <= wanted and len(placed(c)) >= len(live)
