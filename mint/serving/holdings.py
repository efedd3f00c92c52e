"""What a plan puts where, with each node's bytes and each revision's holders kept in
step with it, so that a planning turn touches only what it changes instead of recounting
every node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .requests import RevisionRef


class Holdings:
    def __init__(self, plan: Mapping[str, Iterable[RevisionRef]] | None = None) -> None:
        self.refs: dict[str, set[RevisionRef]] = {}  # node -> revisions
        self.used: dict[str, int] = {}  # node -> bytes of its revisions
        self.holders: dict[RevisionRef, set[str]] = {}  # revision -> nodes
        for name, refs in (plan or {}).items():
            self.add(name, refs)

    def on(self, name: str) -> set[RevisionRef]:
        """The revisions on `name` (none for a node not seen before)."""
        if name not in self.refs:
            self.refs[name], self.used[name] = set(), 0
        return self.refs[name]

    def add(self, name: str, refs: Iterable[RevisionRef]) -> None:
        held = self.on(name)
        for ref in refs:
            if ref not in held:
                held.add(ref)
                self.used[name] += ref.weights_size
                self.holders.setdefault(ref, set()).add(name)

    def remove(self, name: str, refs: Iterable[RevisionRef]) -> None:
        """Take `refs` (held there) off node `name`."""
        held = self.refs[name]
        for ref in refs:
            held.remove(ref)
            self.used[name] -= ref.weights_size
            self._unhold(ref, name)

    def _unhold(self, ref: RevisionRef, name: str) -> None:
        nodes = self.holders[ref]
        nodes.remove(name)
        if not nodes:
            del self.holders[ref]

    def drop_node(self, name: str) -> set[RevisionRef]:
        """Forget node `name`; the revisions it held."""
        held = self.refs.pop(name)
        del self.used[name]
        for ref in held:
            self._unhold(ref, name)
        return held

    def drop_revision(self, ref: RevisionRef) -> None:
        for name in list(self.holders.get(ref, ())):
            self.remove(name, [ref])

    def holding(self, refs: Sequence[RevisionRef]) -> set[str]:
        """The nodes holding every one of `refs` (to read, not to change)."""
        if not refs:
            return set()
        first, *rest = refs
        nodes = self.holders.get(first, set())
        return nodes.intersection(*(self.holders.get(r, ()) for r in rest)) if rest else nodes
