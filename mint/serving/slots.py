"""Packed LoRA slots for one linear layer, per rank class, and the layer that applies them.

A rank class's adapters of a layer live in two preallocated tensors, A [slots, r, in] and
B [slots, out, r] (r: the class's rank; a smaller adapter in it is zero-padded), plus a
scale per slot, on the base's device and in its dtype (`rank_classes` says how slots are
split into classes). Row 0 of every class stays empty. A batch routes each row to one
slot; per class present in the batch, its rows' delta is two batched products over the
gathered slots, x·Aᵀ·Bᵀ·scale — work proportional to the rows and their class's rank,
not to how many adapters are resident or the largest rank served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .rank_classes import EMPTY_SLOT
from .routing import SlotRouting

# (x [rows, seq, in], A bank [slots, r, in], B bank [slots, out, r], scale [slots],
# slot ids [rows] into the bank) → each row's delta [rows, seq, out].
GatheredLora = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]

__all__ = ["EMPTY_SLOT", "GatheredLora", "LoraSlots", "SlotBank", "SlottedLinear", "gathered_lora"]


def gathered_lora(
    x: torch.Tensor,
    a_bank: torch.Tensor,
    b_bank: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
) -> torch.Tensor:
    """Each row's x·Aᵀ·Bᵀ·scale with its slot's A and B (`GatheredLora`): index_select
    and two bmm. The CPU path, and the reference a fused kernel must equal."""
    a = a_bank.index_select(0, slot_ids)  # [rows, r, in]
    b = b_bank.index_select(0, slot_ids)  # [rows, out, r]
    hidden = torch.bmm(x, a.transpose(1, 2))  # [rows, seq, r]
    out = torch.bmm(hidden, b.transpose(1, 2))  # [rows, seq, out]
    return out * scale.index_select(0, slot_ids)[:, None, None]


class LoraSlots(nn.Module):
    """One layer's slots of one rank class."""

    A: torch.Tensor
    B: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        slots: int,
        max_rank: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
        storage: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """`slots` counts the empty row 0. `storage`: (A, B, scale) views into a SlotBank
        shared with same-shaped layers."""
        super().__init__()
        if slots < 2:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        self.max_rank = max_rank  # the class's rank
        if storage is None:
            storage = (
                torch.zeros(slots, max_rank, in_features, dtype=dtype, device=device),
                torch.zeros(slots, out_features, max_rank, dtype=dtype, device=device),
                torch.zeros(slots, dtype=dtype, device=device),
            )
        self.register_buffer("A", storage[0])
        self.register_buffer("B", storage[1])
        self.register_buffer("scale", storage[2])

    @property
    def slots(self) -> int:
        return int(self.A.shape[0])

    @torch.no_grad()
    def load(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        """Copy one adapter's A [r, in] and B [out, r] into `slot` (in place, O(size))."""
        self.copy_in(slot, a, b, scale)

    def copy_in(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        """`load` for callers already under torch.no_grad() (a whole model's layers)."""
        if slot == EMPTY_SLOT or not 0 < slot < self.slots:
            raise ValueError(f"slot {slot} is out of range 1..{self.slots - 1}")
        rank = a.shape[0]
        if rank > self.max_rank or b.shape[1] != rank:
            raise ValueError(f"rank {rank} does not fit slots of rank {self.max_rank}")
        self.A[slot, :rank].copy_(a, non_blocking=True)
        self.B[slot, :, :rank].copy_(b, non_blocking=True)
        if rank < self.max_rank:  # zero-padding: the unused ranks contribute nothing
            self.A[slot, rank:].zero_()
            self.B[slot, :, rank:].zero_()
        self.scale[slot] = scale

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.scale[slot] = 0

    def delta(self, x: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """x [batch, seq, in], slot_ids [batch] → the adapters' contribution [batch, seq, out]."""
        return gathered_lora(x, self.A, self.B, self.scale, slot_ids)


class SlotBank:
    """One rank class's slots of several same-shaped layers in one set of tensors (A
    [layers, slots, r, in], …), so loading an adapter into all of them is a few copies,
    not a few per layer."""

    def __init__(
        self,
        layers: int,
        in_features: int,
        out_features: int,
        slots: int,
        max_rank: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.max_rank = max_rank
        self.A = torch.zeros(layers, slots, max_rank, in_features, dtype=dtype, device=device)
        self.B = torch.zeros(layers, slots, out_features, max_rank, dtype=dtype, device=device)
        self.scale = torch.zeros(layers, slots, dtype=dtype, device=device)

    @property
    def slot_bytes(self) -> int:
        """What one slot's A and B take over all its layers."""
        return self.A[:, 0].nbytes + self.B[:, 0].nbytes

    def layer(self, i: int) -> LoraSlots:
        _, slots, rank, in_features = self.A.shape
        return LoraSlots(
            in_features,
            self.B.shape[2],
            slots,
            rank,
            storage=(self.A[i], self.B[i], self.scale[i]),
        )

    def load(self, slot: int, parts: list[tuple[torch.Tensor, torch.Tensor, float]]) -> bool:
        """Every layer's (A, B, scale) at once; False (nothing written) unless all layers
        have a part and share one rank (then load them one by one).

        A copy per layer (each too small for torch to split across threads), not one
        copy of all layers stacked: a copy that large runs on torch's thread pool, whose
        join waits for every thread, and on a busy machine it stalled for ~15 ms instead
        of 0.3 (2 torch threads on 2 shared cores, copying on the main thread)."""
        rank = parts[0][0].shape[0]
        if len(parts) != self.A.shape[0] or any(a.shape[0] != rank for a, _, _ in parts):
            return False
        if slot == EMPTY_SLOT or not 0 < slot < self.A.shape[1]:
            raise ValueError(f"slot {slot} is out of range 1..{self.A.shape[1] - 1}")
        if rank > self.max_rank:
            raise ValueError(f"rank {rank} does not fit slots of rank {self.max_rank}")
        # Every layer's destination from one indexing each (64 Python-level indexings
        # took half of a 2 MB adapter's copy); from pinned memory: asynchronous.
        a_rows, b_columns = self.A[:, slot, :rank].unbind(0), self.B[:, slot, :, :rank].unbind(0)
        for (a, b, _), a_row, b_column in zip(parts, a_rows, b_columns, strict=True):
            a_row.copy_(a, non_blocking=True)
            b_column.copy_(b, non_blocking=True)
        if rank < self.max_rank:
            self.A[:, slot, rank:].zero_()
            self.B[:, slot, :, rank:].zero_()
        self.scale[:, slot].copy_(torch.tensor([s for _, _, s in parts], dtype=self.scale.dtype))
        return True


class SlottedLinear(nn.Module):
    """A frozen base linear layer plus the packed adapters of the batch being run."""

    def __init__(
        self, base: nn.Linear, banks: Sequence[LoraSlots], gathered: GatheredLora = gathered_lora
    ) -> None:
        """`banks`: this layer's slots, one per rank class, in the layout's order."""
        super().__init__()
        self.base = base
        self.banks = nn.ModuleList(banks)
        self.gathered = gathered
        self.routing: SlotRouting | None = None  # set by the model for each forward pass

    def bank(self, rank_class: int) -> LoraSlots:
        bank = self.banks[rank_class]
        if not isinstance(bank, LoraSlots):
            raise TypeError(f"rank class {rank_class} holds a {type(bank).__name__}")
        return bank

    @property
    def slots(self) -> LoraSlots:
        """The slots of a layout with a single rank class (then a slot is its own row)."""
        if len(self.banks) != 1:
            raise ValueError("this layer has several rank classes: use `bank(i)`")
        return self.bank(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.routing is None:
            return out
        for group in self.routing.groups:  # the classes this batch uses, no others
            bank = self.bank(group.rank_class)
            if group.rows is None:  # every row is in this class
                delta = self.gathered(x, bank.A, bank.B, bank.scale, group.slots)
                out = out + delta.to(out.dtype)
            else:
                rows = x.index_select(0, group.rows)
                delta = self.gathered(rows, bank.A, bank.B, bank.scale, group.slots)
                out.index_add_(0, group.rows, delta.to(out.dtype))
        return out
