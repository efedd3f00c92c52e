"""Placement is pure: rendezvous order, capacity, replicas, LRU room-making, dead nodes,
bases."""

from __future__ import annotations

import dataclasses

from mint.serving.placement import Group, NodeCapacity, Placement, Want
from mint.serving.requests import RevisionRef

from .placement_reference import plan_all

MB = 1_000_000


def ref(i: int, size: int = MB) -> RevisionRef:
    return RevisionRef(f"id{i:03d}", f"acme/a{i}", 1, f"{i:064x}", size)


def nodes(*names: str, budget: int = 20 * MB) -> list[NodeCapacity]:
    return [NodeCapacity(n, budget) for n in names]


def want(i: int, t: float, replicas: int = 1, pinned: bool = False) -> Want:
    return Want(Group.of([ref(i)]), t, replicas, pinned)


def holders(plan: dict[str, set[RevisionRef]], r: RevisionRef) -> list[str]:
    return sorted(n for n, refs in plan.items() if r in refs)


def test_every_group_is_placed_once_within_budgets() -> None:
    placement = Placement(fill=1.0)
    plan = plan_all(placement, [want(i, i) for i in range(50)], nodes("n1", "n2", "n3"))
    assert all(len(holders(plan, ref(i))) == 1 for i in range(50))
    assert all(len(refs) <= 20 for refs in plan.values())
    assert min(len(refs) for refs in plan.values()) >= 10, "rendezvous spreads the load"


def test_a_plan_is_stable_and_a_dead_nodes_groups_move_only() -> None:
    placement = Placement(fill=1.0)
    wants = [want(i, i) for i in range(30)]
    before = plan_all(placement, wants, nodes("n1", "n2", "n3"))
    assert plan_all(placement, wants, nodes("n1", "n2", "n3")) == before
    after = plan_all(placement, wants, nodes("n1", "n3"))
    for i in range(30):
        was = holders(before, ref(i))
        if was != ["n2"]:
            assert holders(after, ref(i)) == was, "groups on live nodes stay where they are"
        else:
            assert len(holders(after, ref(i))) == 1
    assert "n2" not in after


def test_hot_groups_get_replicas_on_distinct_nodes() -> None:
    plan = plan_all(Placement(), [want(1, 1, replicas=3), want(2, 1)], nodes("n1", "n2", "n3"))
    assert holders(plan, ref(1)) == ["n1", "n2", "n3"]
    assert len(holders(plan, ref(2))) == 1


def test_a_stack_is_placed_whole_on_one_node() -> None:
    stack = Want(Group.of([ref(1), ref(2), ref(3)]), 5)
    plan = plan_all(Placement(), [stack], nodes("n1", "n2", "n3", "n4"))
    (node,) = holders(plan, ref(1))
    assert holders(plan, ref(2)) == holders(plan, ref(3)) == [node]


def test_when_full_the_least_recently_demanded_unpinned_make_room() -> None:
    placement = Placement(fill=1.0)
    first = [want(0, 0, pinned=True)] + [want(i, i) for i in range(1, 4)]
    plan_all(placement, first, nodes("n1", budget=4 * MB))
    plan = plan_all(placement, [*first, want(9, 10)], nodes("n1", budget=4 * MB))
    assert plan["n1"] == {ref(0), ref(2), ref(3), ref(9)}, "a1 was the oldest unpinned"


def test_a_newcomer_never_evicts_what_was_demanded_after_it() -> None:
    placement = Placement(fill=1.0)
    recent = [want(i, 100 + i) for i in range(4)]
    plan_all(placement, recent, nodes("n1", budget=4 * MB))
    plan = plan_all(placement, [*recent, want(9, 1)], nodes("n1", budget=4 * MB))
    assert ref(9) not in plan["n1"] and len(plan["n1"]) == 4


def test_bytes_alone_limit_a_node_not_its_device_slots() -> None:
    """A node holds its revisions in host memory and copies them into its slots on
    demand, so it may hold more than it has slots."""
    plan = plan_all(Placement(), [want(i, i) for i in range(10)], nodes("n1", budget=10 * MB))
    assert len(plan["n1"]) == 8  # 80% of the budget


def on_base(r: RevisionRef, base: str) -> RevisionRef:
    return dataclasses.replace(r, base_fingerprint=base)


def two_bases() -> list[NodeCapacity]:
    return [
        NodeCapacity("llama", 20 * MB, "base-l"),
        NodeCapacity("qwen", 20 * MB, "base-q"),
    ]


def test_a_group_goes_only_to_nodes_serving_its_base() -> None:
    ls = [on_base(ref(i), "base-l") for i in range(10)]
    qs = [on_base(ref(i), "base-q") for i in range(10, 20)]
    wants = [Want(Group.of([r]), 1, replicas=2) for r in ls + qs]  # replicas: as many as fit
    plan = plan_all(Placement(), wants, two_bases())
    assert plan["llama"] == set(ls) and plan["qwen"] == set(qs)


def test_a_group_no_node_can_serve_goes_nowhere() -> None:
    mixed = Want(Group.of([on_base(ref(1), "base-l"), on_base(ref(2), "base-q")]), 1)
    unserved = Want(Group.of([on_base(ref(3), "base-m")]), 1)
    assert plan_all(Placement(), [mixed, unserved], two_bases()) == {"llama": set(), "qwen": set()}


def test_a_revision_on_a_node_of_another_base_is_moved_to_its_own() -> None:
    r = on_base(ref(1), "base-l")
    placement = Placement(assignment={"qwen": {r}})  # an older controller's mistake
    assert plan_all(placement, [Want(Group.of([r]), 1)], two_bases()) == {
        "llama": {r},
        "qwen": set(),
    }
