"""Which adapter revisions are resident in which slots of a node: a byte budget, LRU
eviction, pinning, and in-use counts so a slot is never reused under a running batch.

Slots come in rank classes (`rank_classes.SlotLayout`): class 0 has slots 1..n₀, class 1
the next n₁, and so on; an admission names its class and the bytes a slot of that class
takes, and evicts within the class for a slot, anywhere for bytes. Pure bookkeeping (no
torch): the node asks `admit` for a slot and copies the weights there. Every eviction,
whichever call caused it, goes through `on_evict`, so whoever holds the weights (the
engine) forgets them in the same step and the two cannot diverge. A resident key is an
exact (adapter, revision): a revision is never silently swapped for another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
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
    rank_class: int = 0
    pinned: bool = False
    in_use: int = 0


class SlotInvariantBroken(RuntimeError):
    """The table's bookkeeping contradicts itself: a bug, not a condition to retry."""


class SlotTable:
    def __init__(
        self, slots: int | Sequence[int], budget_bytes: int, on_evict: OnEvict | None = None
    ) -> None:
        """`slots`: a slot count (counting slot 0) for one class, or each class's usable
        slot count in the layout's order. `on_evict(key, slot)` is called for every key
        that leaves the table."""
        sizes = [slots - 1] if isinstance(slots, int) else list(slots)
        if not sizes or min(sizes) < 1:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        self.sizes = sizes
        self.capacity = sum(sizes)
        self.budget_bytes = budget_bytes
        self.on_evict = on_evict
        self._entries: OrderedDict[ResidentKey, _Entry] = OrderedDict()  # LRU first
        firsts = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        # Per class, popped from the end: the lowest slot first.
        self._free = [list(range(f + n - 1, f - 1, -1)) for f, n in zip(firsts, sizes, strict=True)]
        # Kept as entries come and go, so that an admission costs the same with ten
        # thousand adapters resident as with ten.
        self._used_bytes = 0
        self._held = [0] * len(sizes)  # entries per class
        self._taken: set[int] = set()  # the slots entries hold

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

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
        self, key: ResidentKey, nbytes: int, pinned: bool = False, rank_class: int = 0
    ) -> tuple[int, list[ResidentKey]]:
        """A slot of `rank_class` for `key`, charged `nbytes`, and the keys evicted to make
        room (least recently used first, never pinned or in-use ones). ResourceExhausted if
        it cannot fit: then nothing was evicted, the table is as it was."""
        if key in self._entries:
            return self.slot_of(key) or 0, []
        if nbytes > self.budget_bytes:
            raise ResourceExhausted(
                f"adapter of {nbytes:,} bytes exceeds the node's budget of {self.budget_bytes:,}"
            )
        victims = self._victims_for(nbytes, rank_class)
        for victim in victims:
            self.evict(victim)
        slot = self._free[rank_class].pop()
        self._check_admission(slot, nbytes, rank_class)
        self._entries[key] = _Entry(slot, nbytes, rank_class, pinned)
        self._taken.add(slot)
        self._used_bytes += nbytes
        self._held[rank_class] += 1
        return slot, victims

    def _victims_for(self, nbytes: int, rank_class: int) -> list[ResidentKey]:
        """The least recently used evictable keys whose going makes room for `nbytes` in a
        slot of `rank_class` (chosen, not yet evicted): of that class while it has no free
        slot, then of any class while the bytes do not fit. ResourceExhausted if even all
        of them would not do."""
        free_slots, free_bytes = len(self._free[rank_class]), self.budget_bytes - self.used_bytes
        victims: list[ResidentKey] = []
        if free_slots > 0 and free_bytes >= nbytes:
            return victims
        evictable = [(k, e) for k, e in self._entries.items() if not e.pinned and e.in_use == 0]
        for k, e in evictable:
            if free_slots > 0:
                break
            if e.rank_class == rank_class:
                victims.append(k)
                free_slots, free_bytes = 1, free_bytes + e.nbytes
        for k, e in evictable:
            if free_bytes >= nbytes:
                break
            if k not in victims:
                victims.append(k)
                free_bytes += e.nbytes
        if free_slots == 0 or free_bytes < nbytes:
            raise ResourceExhausted(
                "every resident adapter is pinned or in use; retry later or unpin some"
            )
        return victims

    def evict(self, key: ResidentKey) -> int:
        entry = self._entries[key]
        if entry.in_use:
            raise ResourceExhausted(f"{key} is in use by {entry.in_use} running batch(es)")
        del self._entries[key]
        self._taken.discard(entry.slot)
        self._used_bytes -= entry.nbytes
        self._held[entry.rank_class] -= 1
        self._free[entry.rank_class].append(entry.slot)
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

    def class_usage(self, rank_class: int) -> tuple[int, int]:
        """How many of the class's slots hold an adapter, and how many of those are leased."""
        held = [e for e in self._entries.values() if e.rank_class == rank_class]
        return len(held), sum(e.in_use > 0 for e in held)

    def leased(self) -> bool:
        """Whether any running batch holds a slot (one will be given back)."""
        return any(e.in_use for e in self._entries.values())

    def _check_admission(self, slot: int, nbytes: int, rank_class: int) -> None:
        """What admitting an entry of `nbytes` to `slot` (just taken off the free list of
        `rank_class`) must keep true: each slot held once, slot 0 never, the budget, and
        every slot of the class either held or free."""
        if slot in self._taken:
            raise SlotInvariantBroken("two adapters share a slot")
        if slot == 0:
            raise SlotInvariantBroken("slot 0 is reserved for no adapter")
        if self._used_bytes + nbytes > self.budget_bytes:
            raise SlotInvariantBroken("over the memory budget")
        if self._held[rank_class] + 1 + len(self._free[rank_class]) != self.sizes[rank_class]:
            raise SlotInvariantBroken(f"a slot of rank class {rank_class} was lost")
