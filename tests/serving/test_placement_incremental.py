"""The placement that keeps state across turns plans exactly as one that recomputes
everything each turn (tests/serving/placement_reference.py), over random sequences of
turns: wants coming and going, demand times changing in place (as the controller changes
them, unannounced), replicas and pins changing, stacks, ties in recency, nodes dying,
joining, changing base or budget, and plans read back from the desired table."""

from __future__ import annotations

import random

from mint.serving.placement import Group, NodeCapacity, Placement, Want
from mint.serving.requests import RevisionRef

from .placement_reference import ReferencePlacement

MB = 1_000_000
BASES = ["base-a", "base-b"]


def pool(rng: random.Random) -> list[RevisionRef]:
    """Revisions of the two served bases, and a few of a base no node serves."""
    return [
        RevisionRef(
            f"id{i:03d}",
            f"acme/a{i}",
            rng.randint(1, 3),
            f"{i:064x}",
            rng.randint(1, 5) * MB,
            rng.choice([*BASES, *BASES, "base-c"]),
        )
        for i in range(40)
    ]


def new_want(rng: random.Random, refs: list[RevisionRef]) -> Want:
    return Want(
        Group.of(rng.sample(refs, rng.choice([1, 1, 1, 2, 3]))),
        float(rng.randint(0, 5)),  # a small range: many ties in recency
        replicas=rng.choice([1, 1, 1, 2, 3]),
        pinned=rng.random() < 0.1,
    )


def change_wants(
    rng: random.Random, wants: dict[str, Want], refs: list[RevisionRef], placement: Placement
) -> None:
    """Some wants go, some come, some change; the placement is told what the controller
    tells it (not demand times)."""
    for key in rng.sample(sorted(wants), len(wants) // 4):
        del wants[key]
        placement.forget(key)
    for _ in range(rng.randint(0, 10)):
        want = new_want(rng, refs)
        if want.group.key not in wants:
            wants[want.group.key] = want
            placement.want(want)
    for want in wants.values():
        if rng.random() < 0.3:
            want.last_demand = float(rng.randint(0, 8))
        if rng.random() < 0.1:
            want.replicas = rng.choice([1, 2, 3])
            placement.want(want)
        if rng.random() < 0.05:
            want.pinned = not want.pinned
            placement.want(want)


def nodes(rng: random.Random, before: list[NodeCapacity]) -> list[NodeCapacity]:
    """Mostly the same fleet as `before`: some die, some join, some change."""
    kept = [n for n in before if rng.random() > 0.15]
    changed = [
        NodeCapacity(n.name, rng.randint(2, 12) * MB, rng.choice(BASES))
        if rng.random() < 0.1
        else n
        for n in kept
    ]
    names = {n.name for n in changed}
    for _ in range(rng.randint(0, 2)):
        name = f"n{rng.randint(0, 9)}"
        if name not in names:
            names.add(name)
            changed.append(NodeCapacity(name, rng.randint(2, 12) * MB, rng.choice(BASES)))
    rng.shuffle(changed)
    return changed


def restored(
    rng: random.Random, fleet: list[NodeCapacity], refs: list[RevisionRef]
) -> dict[str, set[RevisionRef]]:
    """A desired table as an earlier controller left it (of any base, dead nodes too)."""
    names = [n.name for n in fleet] + ["gone"]
    return {name: set(rng.sample(refs, rng.randint(0, 6))) for name in names}


def test_incremental_plans_equal_the_reference_over_random_turns() -> None:
    rng = random.Random(20261201)
    turns = 0
    for _ in range(200):
        refs = pool(rng)
        fill = rng.choice([0.8, 1.0])
        incremental, reference = Placement(fill=fill), ReferencePlacement(fill=fill)
        fleet: list[NodeCapacity] = []
        wants: dict[str, Want] = {}
        for _ in range(rng.randint(1, 12)):
            fleet = nodes(rng, fleet)
            change_wants(rng, wants, refs, incremental)
            if rng.random() < 0.1:
                table = restored(rng, fleet, refs)
                incremental.assignment = table
                reference.assignment = {n: set(r) for n, r in table.items()}
            expected = reference.plan(list(wants.values()), fleet)
            assert incremental.plan(fleet) == expected
            assert incremental.assignment == reference.assignment
            turns += 1
    assert turns > 1000


def test_the_state_kept_holds_only_what_is_wanted_and_live() -> None:
    rng = random.Random(7)
    refs = pool(rng)
    placement = Placement()
    fleet = [NodeCapacity(f"n{i}", 100 * MB, BASES[i % 2]) for i in range(4)]
    wants: dict[str, Want] = {}
    for _ in range(30):
        change_wants(rng, wants, refs, placement)
        placement.plan(fleet)
    plan = placement.plan(fleet[:2])
    assert placement.wants == wants
    assert len(placement._ranks) == len(wants)
    assert set(placement._held.refs) == {"n0", "n1"} == set(plan)
    assert set(placement._held.holders) <= {r for w in wants.values() for r in w.group.refs}
