"""The node's host-memory tier: what every resident revision's weights take in host
memory, within a byte budget of its own, least recently used first out.

Every revision a node holds is here (the device slots are a working set drawn from it,
as vLLM's CPU LoRA cache and S-LoRA's unified memory): a request for a revision that has
no device slot is served by copying it into one, not by fetching it again. Leaving this
tier is leaving the node. Pure bookkeeping (no torch): the engine keeps the weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from mint.domain.errors import ResourceExhausted

from .residency import ResidentKey

T = TypeVar("T")
Busy = Callable[[ResidentKey], bool]


@dataclass
class _Held(Generic[T]):
    value: T
    nbytes: int
    pinned: bool


class HostTier(Generic[T]):
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._held: OrderedDict[ResidentKey, _Held[T]] = OrderedDict()  # LRU first
        self.used_bytes = 0

    def __contains__(self, key: ResidentKey) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[ResidentKey]:
        return iter(list(self._held))

    def get(self, key: ResidentKey) -> T:
        return self._held[key].value

    def pinned(self, key: ResidentKey) -> bool:
        return self._held[key].pinned

    def touch(self, key: ResidentKey) -> None:
        """Mark `key` most recently used."""
        self._held.move_to_end(key)

    def victims_for(self, nbytes: int, busy: Busy) -> list[ResidentKey]:
        """The least recently used keys, neither pinned nor `busy`, whose going makes room
        for `nbytes` (chosen, not removed). ResourceExhausted if even all of them would
        not: then the caller changes nothing."""
        if nbytes > self.budget_bytes:
            raise ResourceExhausted(
                f"adapter of {nbytes:,} bytes exceeds the node's host memory budget of "
                f"{self.budget_bytes:,}; raise --host-budget-mib"
            )
        free = self.budget_bytes - self.used_bytes
        victims: list[ResidentKey] = []
        candidates = (k for k, h in self._held.items() if not h.pinned and not busy(k))
        while free < nbytes:
            victim = next(candidates, None)
            if victim is None:
                raise ResourceExhausted(
                    "host memory holds only pinned or running adapters; retry later or unpin some"
                )
            victims.append(victim)
            free += self._held[victim].nbytes
        return victims

    def add(self, key: ResidentKey, value: T, nbytes: int, pinned: bool = False) -> None:
        """Hold `key` (room made first: `victims_for`)."""
        if key in self._held or self.used_bytes + nbytes > self.budget_bytes:
            raise ValueError(f"{key} is already held or does not fit: make room first")
        self._held[key] = _Held(value, nbytes, pinned)
        self.used_bytes += nbytes

    def remove(self, key: ResidentKey) -> T:
        held = self._held.pop(key)
        self.used_bytes -= held.nbytes
        return held.value
