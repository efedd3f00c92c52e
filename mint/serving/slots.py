"""Packed LoRA slots for one linear layer, and the layer that applies them.

All resident adapters of a layer live in two preallocated tensors, A [slots, R, in] and
B [slots, out, R] (R: the largest rank served; smaller ranks are zero-padded), plus a
scale per slot. A batch names one slot per sample; its delta is two batched products
over the gathered slots, x·Aᵀ·Bᵀ·scale — work proportional to the batch, not to how many
adapters are resident. Slot 0 stays empty: "no adapter".
"""

from __future__ import annotations

import torch
from torch import nn

EMPTY_SLOT = 0


class LoraSlots(nn.Module):
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
    ) -> None:
        super().__init__()
        if slots < 2:
            raise ValueError("need at least 2 slots (slot 0 means no adapter)")
        self.max_rank = max_rank
        self.register_buffer(
            "A", torch.zeros(slots, max_rank, in_features, dtype=dtype, device=device)
        )
        self.register_buffer(
            "B", torch.zeros(slots, out_features, max_rank, dtype=dtype, device=device)
        )
        self.register_buffer("scale", torch.zeros(slots, dtype=dtype, device=device))

    @property
    def slots(self) -> int:
        return int(self.A.shape[0])

    @torch.no_grad()
    def load(self, slot: int, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        """Copy one adapter's A [r, in] and B [out, r] into `slot` (in place, O(size))."""
        if slot == EMPTY_SLOT or not 0 < slot < self.slots:
            raise ValueError(f"slot {slot} is out of range 1..{self.slots - 1}")
        rank = a.shape[0]
        if rank > self.max_rank or b.shape[1] != rank:
            raise ValueError(f"rank {rank} does not fit slots of rank {self.max_rank}")
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.A[slot, :rank].copy_(a)
        self.B[slot, :, :rank].copy_(b)
        self.scale[slot] = scale

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        self.A[slot].zero_()
        self.B[slot].zero_()
        self.scale[slot] = 0

    def delta(self, x: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """x [batch, seq, in], slot_ids [batch] → the adapters' contribution [batch, seq, out]."""
        a = self.A.index_select(0, slot_ids)  # [batch, R, in]
        b = self.B.index_select(0, slot_ids)  # [batch, out, R]
        hidden = torch.bmm(x, a.transpose(1, 2))  # [batch, seq, R]
        out = torch.bmm(hidden, b.transpose(1, 2))  # [batch, seq, out]
        return out * self.scale.index_select(0, slot_ids)[:, None, None]


class SlottedLinear(nn.Module):
    """A frozen base linear layer plus the packed adapters of the batch being run."""

    def __init__(self, base: nn.Linear, slots: LoraSlots) -> None:
        super().__init__()
        self.base = base
        self.slots = slots
        self.slot_ids: torch.Tensor | None = None  # set by the model for each forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.slot_ids is None:
            return out
        delta: torch.Tensor = self.slots.delta(x, self.slot_ids)
        return out + delta.to(out.dtype)
