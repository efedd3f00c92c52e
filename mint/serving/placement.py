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
  groups (of equal recency, in the order of their ids).
- A dead node's groups simply fall out and are placed again on the live ones.
- A revision no group wants any more leaves the plan at the end of the turn.

A turn costs what changed, not what is wanted times the nodes. The wants are told to
it as they change (`want`, `forget`); each group's rendezvous order and each node's
bytes are kept across turns (`rendezvous.Rankings`, `holdings.Holdings`); and a turn
looks only at the groups that may lack a node — new, changed, left short last turn, or
whose revisions lost a node (a node died, or room was made) — in the order a turn over
every group would take them, so the plan is the one that turn would make
(tests/serving/placement_reference.py recomputes everything to check it).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from . import rendezvous
from .holdings import Holdings
from .requests import RevisionRef


@dataclass(frozen=True)
class Group:
    refs: tuple[RevisionRef, ...]  # sorted

    @classmethod
    def of(cls, refs: Iterable[RevisionRef]) -> Group:
        return cls(tuple(sorted(set(refs))))

    @cached_property
    def key(self) -> str:
        return ",".join(f"{r.adapter_id}@{r.revision}" for r in self.refs)

    @cached_property
    def bases(self) -> frozenset[str]:
        return frozenset(r.base_fingerprint for r in self.refs)


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
        return rendezvous.serves(group.bases, self.base_fingerprint)


FILL = 0.8  # leave room: a file's bytes are not exactly what a node holds in its dtype
Recency = dict[RevisionRef, tuple[bool, float]]  # (pinned, last demand) per revision
Priority = tuple[int, float, str]  # (-pinned, -last demand, group key): smallest first


def score(group: Group, node: str) -> bytes:
    return rendezvous.score(group.key, node)


def has_room(refs: Iterable[RevisionRef], node: NodeCapacity, fill: float = FILL) -> bool:
    """Whether `refs` fit in `node`'s byte budget, filled to `fill`."""
    return sum(r.weights_size for r in set(refs)) <= node.budget_bytes * fill


class Placement:
    """The current plan (node -> revisions that should be resident there) for the wants
    it was told of, and what it keeps to plan the next turn cheaply."""

    def __init__(
        self, assignment: Mapping[str, Iterable[RevisionRef]] | None = None, fill: float = FILL
    ) -> None:
        self.fill = fill
        self.wants: dict[str, Want] = {}  # group key -> want
        self._wanted_by: dict[RevisionRef, set[str]] = {}  # revision -> group keys
        self._ranks = rendezvous.Rankings()
        self._dirty: set[str] = set()  # groups that may lack a node
        self._orphans: set[RevisionRef] = set()  # revisions that may have lost every want
        # During a turn: the groups still to look at, all queued so far, the one being
        # placed, and the revisions' recency as asked for.
        self._queue: list[tuple[Priority, str]] = []
        self._queued: set[str] = set()
        self._current: Priority | None = None
        self._recency: Recency = {}
        self.assignment = assignment or {}

    @property
    def assignment(self) -> Mapping[str, set[RevisionRef]]:
        return self._held.refs

    @assignment.setter
    def assignment(self, plan: Mapping[str, Iterable[RevisionRef]]) -> None:
        """Start from `plan` (the desired table a new active controller reads back)."""
        self._held = Holdings(plan)
        self._bases_checked: dict[str, str] = {}  # node -> the base its revisions match
        self._dirty = set(self.wants)
        self._orphans = set(self._held.holders)

    def want(self, want: Want) -> None:
        """Place `want` from the next turn on: a new group, or one whose replicas or pin
        changed. (Its demand time may change without a call: it is read as needed.)"""
        key = want.group.key
        known = self.wants.get(key)
        if known is not None and known.group != want.group:  # the same names, other bytes
            self.forget(key)
            known = None
        if known is None:
            for ref in want.group.refs:
                self._wanted_by.setdefault(ref, set()).add(key)
        self.wants[key] = want
        self._dirty.add(key)

    def forget(self, key: str) -> None:
        """The group named `key` is no longer wanted: its revisions leave the plan at the
        end of the next turn, unless another group wants them."""
        want = self.wants.pop(key, None)
        if want is None:
            return
        for ref in want.group.refs:
            keys = self._wanted_by[ref]
            keys.discard(key)
            if not keys:
                del self._wanted_by[ref]
                self._orphans.add(ref)
        self._ranks.forget(key)
        self._dirty.discard(key)

    def plan(self, nodes: Iterable[NodeCapacity]) -> dict[str, set[RevisionRef]]:
        live = {n.name: n for n in nodes}
        self._follow(live)
        self._recency = {}
        self._queue = [(self._priority(key), key) for key in self._dirty]
        heapq.heapify(self._queue)
        self._queued, self._dirty = set(self._dirty), set()
        while self._queue:
            self._current, key = heapq.heappop(self._queue)
            if self._place(self.wants[key], live):
                self._dirty.add(key)  # still short: try again next turn
        self._current = None
        for ref in self._orphans:
            if ref not in self._wanted_by:  # nobody wants it any more
                self._held.drop_revision(ref)
        self._orphans = set()
        return {name: set(refs) for name, refs in self._held.refs.items()}

    def _priority(self, key: str) -> Priority:
        """Pinned groups first, then the most recently demanded."""
        want = self.wants[key]
        return (-want.pinned, -want.last_demand, key)

    def _follow(self, live: dict[str, NodeCapacity]) -> None:
        """Dead nodes' revisions fall out; a node's revisions of a base it does not serve
        (its base changed, or an older controller put them there) are not kept."""
        bases = {name: node.base_fingerprint for name, node in live.items()}
        self._dirty |= self._ranks.follow(bases)
        for name in self._held.refs.keys() - live.keys():
            self._lost(self._held.drop_node(name))
            self._bases_checked.pop(name, None)
        for name, base in bases.items():
            if self._bases_checked.get(name) != base:
                wrong = [r for r in self._held.on(name) if r.base_fingerprint != base]
                self._held.remove(name, wrong)
                self._lost(wrong)
                self._bases_checked[name] = base

    def _lost(self, refs: Iterable[RevisionRef]) -> None:
        """`refs` lost a node: the groups wanting them may now lack one. Those still to
        come this turn are looked at in their turn; the others next turn."""
        for ref in refs:
            for key in self._wanted_by.get(ref, ()):
                if self._current is None or (priority := self._priority(key)) < self._current:
                    self._dirty.add(key)
                elif key not in self._queued:
                    heapq.heappush(self._queue, (priority, key))
                    self._queued.add(key)

    def _place(self, want: Want, live: dict[str, NodeCapacity]) -> bool:
        """Up to `want.replicas` nodes hold the whole group: first those with room, in
        rendezvous order, then by making room; whether it is still short. (Extra replicas
        of a group that cooled down are not removed here; they go when their node needs
        the room.)"""
        group = want.group
        ranked = self._ranks.order(group.key, group.bases)
        held = sum(1 for name in self._held.holding(group.refs) if live[name].serves(group))
        missing = min(want.replicas, len(ranked)) - held
        needed = set(group.refs)
        for make_room in (False, True):
            for name in ranked:
                if missing <= 0:
                    return False
                if needed <= self._held.refs[name]:
                    continue
                if make_room:
                    placed = self._make_room(want, needed, live[name])
                else:
                    placed = self._bytes_with(name, needed) <= self._limit(live[name])
                if placed:
                    self._held.add(name, needed)
                    missing -= 1
        return missing > 0

    def _limit(self, node: NodeCapacity) -> float:
        return node.budget_bytes * self.fill

    def _bytes_with(self, name: str, needed: set[RevisionRef]) -> int:
        """The node's bytes once `needed` is added to it."""
        refs = self._held.refs[name]
        return self._held.used[name] + sum(r.weights_size for r in needed if r not in refs)

    def _make_room(self, want: Want, needed: set[RevisionRef], node: NodeCapacity) -> bool:
        """Evict this node's least recently demanded unpinned revisions (older than
        `want`) until the group fits; False (and nothing evicted) if it cannot."""
        recency = {r: self._recent(r) for r in self._held.refs[node.name] - needed}
        victims = sorted(
            (r for r, (pinned, _) in recency.items() if not pinned),
            key=lambda r: (recency[r][1], r),
        )
        total, limit, evicted = self._bytes_with(node.name, needed), self._limit(node), []
        for victim in victims:
            if total <= limit:
                break
            if recency[victim][1] > want.last_demand:
                return False
            evicted.append(victim)
            total -= victim.weights_size
        if total > limit:
            return False
        self._held.remove(node.name, evicted)
        self._lost(evicted)
        return True

    def _recent(self, ref: RevisionRef) -> tuple[bool, float]:
        """(pinned by any group, the latest demand of any group wanting it), as of the
        start of this turn (wants do not change during one)."""
        found = self._recency.get(ref)
        if found is None:
            wants = [self.wants[key] for key in self._wanted_by.get(ref, ())]
            pinned = any(w.pinned for w in wants)
            found = self._recency[ref] = (pinned, max([0.0, *(w.last_demand for w in wants)]))
        return found
