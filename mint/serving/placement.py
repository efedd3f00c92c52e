"""Where adapter revisions should be resident: rendezvous hashing plus capacity.

Pure (no I/O, no clock of its own): the controller feeds it demand and the live nodes,
and publishes the difference between successive plans. A group is what one request
needs together (a stacked request's adapters), so a group is placed whole on a node.

- A group goes only to nodes serving the base its adapters were trained on (a group
  whose adapters name different bases goes nowhere), and among those to the ones with
  the highest rendezvous score (sha256(group, node)) that have room, so placements barely
  move when nodes come and go.
- Hot groups get more replicas (`replicas`, from request rates).
- A node's budget is bytes: what its host memory may hold (its device slots are a working
  set drawn from that, filled on demand, so their count bounds nothing here); when no
  candidate has room, the top candidate evicts its least recently demanded, unpinned
  groups.
- A dead node's groups simply fall out and are placed again on the live ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from .requests import RevisionRef


@dataclass(frozen=True)
class Group:
    refs: tuple[RevisionRef, ...]  # sorted

    @classmethod
    def of(cls, refs: Iterable[RevisionRef]) -> Group:
        return cls(tuple(sorted(set(refs))))

    @property
    def key(self) -> str:
        return ",".join(f"{r.adapter_id}@{r.revision}" for r in self.refs)

    @property
    def bases(self) -> set[str]:
        return {r.base_fingerprint for r in self.refs}


@dataclass
class Want:
    group: Group
    last_demand: float
    replicas: int = 1
    pinned: bool = False


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    budget_bytes: int  # the node's host tier, which holds every revision it serves
    base_fingerprint: str = ""

    def serves(self, group: Group) -> bool:
        return group.bases == {self.base_fingerprint}


FILL = 0.8  # leave room: a file's bytes are not exactly what a node holds in its dtype


def has_room(refs: Iterable[RevisionRef], node: NodeCapacity, fill: float = FILL) -> bool:
    """Whether `refs` fit in `node`'s byte budget, filled to `fill`."""
    return sum(r.weights_size for r in set(refs)) <= node.budget_bytes * fill


def score(group: Group, node: str) -> bytes:
    return hashlib.sha256(f"{group.key}|{node}".encode()).digest()


@dataclass
class Placement:
    """The current plan: node -> revisions that should be resident there."""

    assignment: dict[str, set[RevisionRef]] = field(default_factory=dict)
    fill: float = FILL

    def plan(
        self, wants: Iterable[Want], nodes: Iterable[NodeCapacity]
    ) -> dict[str, set[RevisionRef]]:
        live = {n.name: n for n in nodes}
        wants = sorted(wants, key=lambda w: (-w.pinned, -w.last_demand, w.group.key))
        recency = _recency(wants)
        plan = {  # what a node cannot serve (its base changed) is not kept there
            name: {r for r in self.assignment.get(name, set()) if node.serves(Group.of([r]))}
            for name, node in live.items()
        }
        for want in wants:
            self._place(want, plan, live, recency)
        for name, refs in plan.items():  # revisions nobody wants any more
            plan[name] = {r for r in refs if r in recency}
        self.assignment = plan
        return {k: set(v) for k, v in plan.items()}

    def _place(
        self,
        want: Want,
        plan: dict[str, set[RevisionRef]],
        live: dict[str, NodeCapacity],
        recency: dict[RevisionRef, tuple[bool, float]],
    ) -> None:
        """Up to `want.replicas` nodes hold the whole group: first those with room, in
        rendezvous order, then by making room. (Extra replicas of a group that cooled
        down are not removed here; they go when their node needs the room.)"""
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
                    placed = self._fits(plan[name] | needed, live[name])
                if placed:
                    plan[name] |= needed
                    missing -= 1

    def _fits(self, refs: set[RevisionRef], node: NodeCapacity) -> bool:
        return has_room(refs, node, self.fill)

    def _make_room(
        self,
        want: Want,
        refs: set[RevisionRef],
        node: NodeCapacity,
        recency: dict[RevisionRef, tuple[bool, float]],
    ) -> bool:
        """Evict this node's least recently demanded unpinned revisions (older than
        `want`) until the group fits; False (and nothing evicted) if it cannot."""
        needed = set(want.group.refs)
        victims = sorted(
            (r for r in refs - needed if not recency.get(r, (False, 0.0))[0]),
            key=lambda r: recency.get(r, (False, 0.0))[1],
        )
        kept = set(refs)
        for victim in victims:
            if self._fits(kept | needed, node):
                break
            if recency.get(victim, (False, 0.0))[1] > want.last_demand:
                return False
            kept.discard(victim)
        if not self._fits(kept | needed, node):
            return False
        refs.intersection_update(kept)
        return True


def _recency(wants: Iterable[Want]) -> dict[RevisionRef, tuple[bool, float]]:
    """Per revision: (pinned by any group, the latest demand of any group holding it)."""
    out: dict[RevisionRef, tuple[bool, float]] = {}
    for w in wants:
        for r in w.group.refs:
            pinned, last = out.get(r, (False, 0.0))
            out[r] = (pinned or w.pinned, max(last, w.last_demand))
    return out
