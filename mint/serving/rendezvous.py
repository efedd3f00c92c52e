"""Each wanted group's rendezvous order over the live nodes, kept across planning turns.

Rendezvous (highest random weight) hashing ranks the nodes for a group by
sha256(group, node), so a group moves only when one of its top nodes comes or goes.
Ranking every group over every node each turn is a hash per group and node; here a
group is ranked once, when it is first wanted, and a node that joins is scored against
each group and put in its place by binary search (a few hashes, not one per node); a
node that leaves is filtered out. A group no longer wanted is forgotten, so this holds
only the wanted groups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

Order = list[str]  # serving node names, highest score first


def score(key: str, node: str) -> bytes:
    """The rendezvous score of the group named `key` on `node`."""
    return hashlib.sha256(f"{key}|{node}".encode()).digest()


def serves(bases: frozenset[str], node_base: str) -> bool:
    """Whether a node of `node_base` serves a group of adapters trained on `bases`."""
    return bases == {node_base}


class Rankings:
    def __init__(self) -> None:
        self._nodes: dict[str, str] = {}  # node -> base, as the orders were computed
        self._serving: dict[str, list[str]] = {}  # base -> its nodes
        self._orders: dict[str, tuple[frozenset[str], Order]] = {}  # group key -> order

    def __len__(self) -> int:
        return len(self._orders)

    def follow(self, nodes: Mapping[str, str]) -> set[str]:
        """Bring every order in step with the live `nodes` (name -> base); the groups
        that gained a node. A node whose base changed counts as leaving and joining."""
        if nodes == self._nodes:
            return set()
        left = {n for n, base in self._nodes.items() if nodes.get(n) != base}
        joined = [n for n, base in nodes.items() if self._nodes.get(n) != base]
        self._nodes = dict(nodes)
        self._serving = {}
        for node, base in nodes.items():
            self._serving.setdefault(base, []).append(node)
        gained = set()
        for key, (bases, order) in self._orders.items():
            if left:
                order[:] = [n for n in order if n not in left]
            for node in joined:
                if serves(bases, nodes[node]):
                    _insert(key, order, node)
                    gained.add(key)
        return gained

    def order(self, key: str, bases: frozenset[str]) -> Order:
        """The serving nodes of the group named `key` (trained on `bases`), best first."""
        entry = self._orders.get(key)
        if entry is None:
            serving = self._serving.get(next(iter(bases)), []) if len(bases) == 1 else []
            prefix = f"{key}|".encode()  # score(key, n), without formatting it each time
            ranked = sorted(
                serving, key=lambda n: hashlib.sha256(prefix + n.encode()).digest(), reverse=True
            )
            entry = self._orders[key] = (bases, ranked)
        return entry[1]

    def forget(self, key: str) -> None:
        self._orders.pop(key, None)


def _insert(key: str, order: Order, node: str) -> None:
    """Put `node` in `order` (highest score first) by binary search."""
    mine = score(key, node)
    low, high = 0, len(order)
    while low < high:
        middle = (low + high) // 2
        if score(key, order[middle]) > mine:
            low = middle + 1
        else:
            high = middle
    order.insert(low, node)
