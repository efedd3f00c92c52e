"""The straightforward placement the incremental planner must agree with: every turn it
ranks every wanted group over every node (sha256), and recounts each node's bytes.

This is `mint/serving/placement.py` as it was before it kept state across turns, with one
change: victims of equal recency are taken in revision order (`(last demand, ref)`), where
the old code took them in set iteration order, which varies with the hash seed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mint.serving.placement import FILL, Group, NodeCapacity, Placement, Want, has_room, score
from mint.serving.requests import RevisionRef

Recency = dict[RevisionRef, tuple[bool, float]]


@dataclass
class ReferencePlacement:
    assignment: dict[str, set[RevisionRef]] = field(default_factory=dict)
    fill: float = FILL

    def plan(
        self, wants: Iterable[Want], nodes: Iterable[NodeCapacity]
    ) -> dict[str, set[RevisionRef]]:
        live = {n.name: n for n in nodes}
        wants = sorted(wants, key=lambda w: (-w.pinned, -w.last_demand, w.group.key))
        recency = _recency(wants)
        plan = {
            name: {r for r in self.assignment.get(name, set()) if node.serves(Group.of([r]))}
            for name, node in live.items()
        }
        for want in wants:
            self._place(want, plan, live, recency)
        for name, refs in plan.items():
            plan[name] = {r for r in refs if r in recency}
        self.assignment = plan
        return {k: set(v) for k, v in plan.items()}

    def _place(
        self,
        want: Want,
        plan: dict[str, set[RevisionRef]],
        live: dict[str, NodeCapacity],
        recency: Recency,
    ) -> None:
        needed = set(want.group.refs)
        serving = [n for n in live if live[n].serves(want.group)]
        ranked = sorted(serving, key=lambda n: score(want.group, n), reverse=True)
        missing = min(want.replicas, len(ranked)) - sum(needed <= plan[n] for n in ranked)
        for make_room in (False, True):
            for name in ranked:
                if missing <= 0:
                    return
                if needed <= plan[name]:
                    continue
                if make_room:
                    placed = self._make_room(want, plan[name], live[name], recency)
                else:
                    placed = has_room(plan[name] | needed, live[name], self.fill)
                if placed:
                    plan[name] |= needed
                    missing -= 1

    def _make_room(
        self, want: Want, refs: set[RevisionRef], node: NodeCapacity, recency: Recency
    ) -> bool:
        needed = set(want.group.refs)
        victims = sorted(
            (r for r in refs - needed if not recency.get(r, (False, 0.0))[0]),
            key=lambda r: (recency.get(r, (False, 0.0))[1], r),
        )
        kept = set(refs)
        for victim in victims:
            if has_room(kept | needed, node, self.fill):
                break
            if recency.get(victim, (False, 0.0))[1] > want.last_demand:
                return False
            kept.discard(victim)
        if not has_room(kept | needed, node, self.fill):
            return False
        refs.intersection_update(kept)
        return True


def _recency(wants: Iterable[Want]) -> Recency:
    out: Recency = {}
    for w in wants:
        for r in w.group.refs:
            pinned, last = out.get(r, (False, 0.0))
            out[r] = (pinned or w.pinned, max(last, w.last_demand))
    return out


def plan_all(
    placement: Placement, wants: Iterable[Want], nodes: Iterable[NodeCapacity]
) -> dict[str, set[RevisionRef]]:
    """Tell `placement` this turn's wants in full (forgetting the others), then plan."""
    wants = list(wants)
    for key in placement.wants.keys() - {w.group.key for w in wants}:
        placement.forget(key)
    for want in wants:
        placement.want(want)
    return placement.plan(nodes)
