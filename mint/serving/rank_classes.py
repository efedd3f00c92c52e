"""How a node's adapter slots are split into rank classes, and where each slot lives.

Each class has slots of one rank; an adapter (or a weighted stack, whose rank is the sum
of its parts') goes into the smallest class whose rank is at least its own, so a rank-8
adapter on a node serving up to rank 64 takes a rank-8 slot, not a quarter-used rank-64
one. Slots are numbered across classes: slot 0 is "no adapter", class 0 has slots
1..n₀, class 1 the next n₁, and so on. Within a class's bank a slot is row `local`
(1..nᵢ); row 0 of every bank stays empty.

Pure (no torch): the slot table and the packed model both follow one layout.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

from mint.domain.errors import InvalidArgument

EMPTY_SLOT = 0


@dataclass(frozen=True)
class RankClass:
    rank: int
    slots: int  # usable slots of this rank (slot 0, "no adapter", is not counted)


@dataclass(frozen=True)
class SlotLayout:
    classes: tuple[RankClass, ...]  # ascending rank

    def __post_init__(self) -> None:
        ranks = [c.rank for c in self.classes]
        if not ranks or ranks != sorted(set(ranks)) or ranks[0] < 1:
            raise ValueError(f"rank classes must be distinct positive ranks, not {ranks}")
        if any(c.slots < 1 for c in self.classes):
            raise ValueError("every rank class needs at least one slot")

    @classmethod
    def uniform(cls, slots: int, max_rank: int) -> SlotLayout:
        """One class: `slots` slots (counting slot 0) of rank `max_rank`."""
        if slots < 2:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        return cls((RankClass(max_rank, slots - 1),))

    @classmethod
    def parse(cls, spec: str, slots: int, max_rank: int) -> SlotLayout:
        """From a node setting: "auto" (powers of two up to `max_rank`, and `max_rank`),
        or comma-separated ranks, each optionally with its own slot count ("8:96,32:16").
        A class without a count has `slots` slots (counting slot 0, as `--slots` does)."""
        if slots < 2:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        if spec.strip() == "auto":
            ranks = sorted({2**i for i in range(max_rank.bit_length()) if 2**i < max_rank})
            return cls(tuple(RankClass(r, slots - 1) for r in [*ranks, max_rank]))
        try:
            classes = [_parse_class(entry, slots - 1) for entry in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"rank classes {spec!r}: write 'auto' or ranks with optional slot counts, "
                "such as '8,16,32' or '8:96,32:16'"
            ) from None
        layout = cls(tuple(sorted(classes, key=lambda c: c.rank)))
        if layout.max_rank != max_rank:
            raise ValueError(
                f"the largest rank class ({layout.max_rank}) must be the largest rank served "
                f"({max_rank}): add a class of rank {max_rank} or change --max-rank"
            )
        return layout

    @property
    def max_rank(self) -> int:
        return self.classes[-1].rank

    @property
    def sizes(self) -> list[int]:
        """Each class's usable slot count, in order."""
        return [c.slots for c in self.classes]

    @property
    def capacity(self) -> int:
        """Usable slots over all classes."""
        return sum(self.sizes)

    @cached_property
    def _ends(self) -> list[int]:
        """The last slot of each class."""
        return list(accumulate(self.sizes))

    def first_slot(self, index: int) -> int:
        return 1 + self._ends[index] - self.sizes[index]

    def locate(self, slot: int) -> tuple[int, int]:
        """(class index, row in that class's bank) of a slot other than 0."""
        index = bisect_right(self._ends, slot - 1)
        if slot <= EMPTY_SLOT or index >= len(self.classes):
            raise ValueError(f"slot {slot} is out of range 1..{self.capacity}")
        return index, slot - self.first_slot(index) + 1

    def fitting(self, rank: int) -> list[int]:
        """The classes an adapter of `rank` fits in, smallest first; InvalidArgument if
        none does."""
        indices = [i for i, c in enumerate(self.classes) if c.rank >= rank]
        if not indices:
            raise InvalidArgument(f"rank {rank} exceeds this node's largest, {self.max_rank}")
        return indices


def _parse_class(entry: str, default_slots: int) -> RankClass:
    rank, _, slots = entry.strip().partition(":")
    return RankClass(int(rank), int(slots) if slots else default_slots)
