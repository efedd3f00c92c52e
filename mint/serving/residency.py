"""Which adapter revisions are resident in which slots of a node: a byte budget, LRU
eviction, pinning, and in-use counts so a slot is never reused under a running batch.

Pure bookkeeping (no torch): the node asks `admit` for a slot and copies the weights
there. Every eviction, whichever call caused it, goes through `on_evict`, so whoever holds
the weights (the engine) forgets them in the same step and the two cannot diverge. A
resident key is an exact (adapter, revision): a revision is never silently swapped for
another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mint.domain.errors import ResourceExhausted

OnEvict = Callable[["ResidentKey", int], None]


@dataclass(frozen=True, order=True)
class ResidentKey:
    adapter_id: str
    revision: int


@dataclass
class _Entry:
    slot: int
    nbytes: int
    pinned: bool = False
    in_use: int = 0


class SlotInvariantBroken(RuntimeError):
    """The table's bookkeeping contradicts itself: a bug, not a condition to retry."""


class SlotTable:
    def __init__(self, slots: int, budget_bytes: int, on_evict: OnEvict | None = None) -> None:
        """`on_evict(key, slot)` is called for every key that leaves the table."""
        if slots < 2:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        self.capacity = slots - 1
        self.budget_bytes = budget_bytes
        self.on_evict = on_evict
        self._entries: OrderedDict[ResidentKey, _Entry] = OrderedDict()  # LRU first
        self._free = list(range(slots - 1, 0, -1))

    @property
    def used_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __contains__(self, key: ResidentKey) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def slot_of(self, key: ResidentKey) -> int | None:
        """The key's slot, marking it most recently used; None if not resident."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.slot

    def admit(
        self, key: ResidentKey, nbytes: int, pinned: bool = False
    ) -> tuple[int, list[ResidentKey]]:
        """A slot for `key` and the keys evicted to make room (least recently used first,
        never pinned or in-use ones). ResourceExhausted if it cannot fit: then nothing was
        evicted, the table is as it was."""
        if key in self._entries:
            return self.slot_of(key) or 0, []
        if nbytes > self.budget_bytes:
            raise ResourceExhausted(
                f"adapter of {nbytes:,} bytes exceeds the node's budget of {self.budget_bytes:,}"
            )
        victims = self._victims_for(nbytes)
        for victim in victims:
            self.evict(victim)
        self._entries[key] = _Entry(self._free.pop(), nbytes, pinned)
        self._check()
        return self._entries[key].slot, victims

    def _victims_for(self, nbytes: int) -> list[ResidentKey]:
        """The least recently used evictable keys whose going makes room for `nbytes`
        (chosen, not yet evicted); ResourceExhausted if even all of them would not."""
        free_slots, free_bytes = len(self._free), self.budget_bytes - self.used_bytes
        victims: list[ResidentKey] = []
        evictable = ((k, e) for k, e in self._entries.items() if not e.pinned and e.in_use == 0)
        while free_slots == 0 or free_bytes < nbytes:
            victim = next(evictable, None)
            if victim is None:
                raise ResourceExhausted(
                    "every resident adapter is pinned or in use; retry later or unpin some"
                )
            victims.append(victim[0])
            free_slots, free_bytes = free_slots + 1, free_bytes + victim[1].nbytes
        return victims

    def evict(self, key: ResidentKey) -> int:
        entry = self._entries[key]
        if entry.in_use:
            raise ResourceExhausted(f"{key} is in use by {entry.in_use} running batch(es)")
        del self._entries[key]
        self._free.append(entry.slot)
        if self.on_evict is not None:
            self.on_evict(key, entry.slot)
        return entry.slot

    def pin(self, key: ResidentKey, pinned: bool = True) -> None:
        self._entries[key].pinned = pinned

    def acquire(self, key: ResidentKey) -> int:
        """Mark the key in use by a batch; it cannot be evicted until released."""
        entry = self._entries[key]
        entry.in_use += 1
        self._entries.move_to_end(key)
        return entry.slot

    def release(self, key: ResidentKey) -> None:
        entry = self._entries[key]
        if entry.in_use == 0:
            raise ValueError(f"{key} released more often than acquired")
        entry.in_use -= 1

    def in_use(self, key: ResidentKey) -> int:
        """How many running batches hold `key` (0 if it is not resident)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.in_use

    def _check(self) -> None:
        slots = [e.slot for e in self._entries.values()]
        if len(slots) != len(set(slots)):
            raise SlotInvariantBroken("two adapters share a slot")
        if 0 in slots:
            raise SlotInvariantBroken("slot 0 is reserved for no adapter")
        if self.used_bytes > self.budget_bytes:
            raise SlotInvariantBroken("over the memory budget")
        if len(slots) + len(self._free) != self.capacity:
            raise SlotInvariantBroken("a slot was lost")
