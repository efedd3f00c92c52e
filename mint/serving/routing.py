"""Which rows of a batch use which rank class, computed on the host once per batch
membership (not per forward pass) and copied to the device in one non-blocking copy, so
a forward pass reads nothing back to decide which classes to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .rank_classes import EMPTY_SLOT, SlotLayout


@dataclass(frozen=True)
class ClassRows:
    rank_class: int  # index into the layout's classes
    rows: torch.Tensor | None  # the batch rows in this class (None: all rows, in order)
    slots: torch.Tensor  # each of those rows' slot: its row in the class's bank


@dataclass(frozen=True)
class SlotRouting:
    rows: int
    groups: tuple[ClassRows, ...]  # only the classes some row uses; bare rows are in none


def route(layout: SlotLayout, slots: Sequence[int], device: torch.device) -> SlotRouting:
    """The routing of a batch whose row i uses slot `slots[i]` (0: the bare base)."""
    members: dict[int, tuple[list[int], list[int]]] = {}
    for row, slot in enumerate(slots):
        if slot != EMPTY_SLOT:
            index, local = layout.locate(slot)
            rows, locals_ = members.setdefault(index, ([], []))
            rows.append(row)
            locals_.append(local)
    if not members:
        return SlotRouting(len(slots), ())
    flat = [i for _, (rows, locals_) in sorted(members.items()) for i in rows + locals_]
    packed = _on(device, flat)
    groups, at = [], 0
    for index, (rows, _) in sorted(members.items()):
        n = len(rows)
        every = n == len(slots)  # then the rows are 0..n-1 in order
        rows_at = None if every else packed[at : at + n]
        groups.append(ClassRows(index, rows_at, packed[at + n : at + 2 * n]))
        at += 2 * n
    return SlotRouting(len(slots), tuple(groups))


def _on(device: torch.device, values: list[int]) -> torch.Tensor:
    """`values` on `device`; to a GPU from page-locked memory, without waiting for it."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=torch.long, device=device)
    host = torch.tensor(values, dtype=torch.long, pin_memory=True)
    return host.to(device, non_blocking=True)
