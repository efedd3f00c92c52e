"""The running batch's KV cache in storage of its own: row i of every layer's keys and
values holds request i's tokens from column 0, with its length beside it, so rows of
different lengths share a decode pass without padding, and the cache is not copied on
each pass (transformers' DynamicCache concatenates it every time).

A decode pass writes each row's new key and value in place, at the row's own length,
and attends over the first `width` columns (the longest row's) under a mask of each
row's own. Rows join from a prefilled `KvBatch` (their columns, left-padded there,
copied to the start of new rows) and leave by moving the rows after them down: joins
and leaves copy only the rows that arrive or move, never the whole batch. Storage grows
by doubling (rows, columns), so nothing is sized ahead. The shapes of a pass depend on
the row count and width only, the ground for a captured decode step on a GPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .kv_batch import KvBatch
from .packed_model import PackedLoraModel
from .routing import SlotRouting

_STORAGE = itertools.count(1)


@dataclass(frozen=True)
class _Pass:
    lengths: torch.Tensor  # each row's write column
    width: int  # the columns attended over


class StaticKvBatch:
    def __init__(
        self, model: PackedLoraModel, device: torch.device, keep_storage: bool = False
    ) -> None:
        """No rows yet; storage comes with the first rows that join, and goes when the
        last row leaves unless `keep_storage` (captured passes read it: they would be
        captured again)."""
        self.model, self.device, self.keep_storage = model, device, keep_storage
        self.keys: list[torch.Tensor] = []  # per layer [capacity, heads, columns, head_dim]
        self.values: list[torch.Tensor] = []
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)  # tokens per row
        self._lengths: list[int] = []  # the same on the host: nothing is read back
        self.slots: list[int] = []
        self.routing: SlotRouting = model.route([])
        self._pass: _Pass | None = None  # the pass under way
        self.storage = 0  # which storage the tensors are: new on each allocation
        attention = getattr(getattr(model.base, "config", None), "_attn_implementation", "sdpa")
        if attention not in ("sdpa", "eager"):
            raise ValueError(
                f"the running batch's KV cache needs sdpa or eager attention (a 4D mask), "
                f"not {attention!r}: load the base with attn_implementation='sdpa'"
            )
        self._additive = attention == "eager"  # else a boolean mask

    @property
    def rows(self) -> int:
        return len(self.slots)

    @property
    def width(self) -> int:
        """The longest row's length."""
        return max(self._lengths, default=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """One token per row (`ids` [rows, 1]); the logits [rows, vocab] (float32) after
        it."""
        if not self.rows or ids.shape != (self.rows, 1):
            raise ValueError(f"a decode pass takes one token for each of {self.rows} rows")
        self.reserve(self.rows, self.width + 1)
        logits = self.run_pass(ids, self.lengths, self.routing, self.width + 1)
        self.advance()
        return logits

    def run_pass(
        self, ids: torch.Tensor, lengths: torch.Tensor, routing: SlotRouting, width: int
    ) -> torch.Tensor:
        """The pass itself, for the first `len(ids)` rows of storage (with room for
        `width` columns: `reserve`), each writing at column `lengths[i]` and attending
        over the first `width`: a function of its tensors' values and shapes alone, so
        that it can be captured (`DecodeGraphs` pads the batch with storage rows past its
        own). Moves no length: `advance` does, once."""
        columns = torch.arange(width, device=self.device)
        attend = columns[None, :] <= lengths[:, None]  # its own tokens and the new one
        self._pass = _Pass(lengths, width)
        try:
            out = self.model.run(
                ids,
                routing,
                attention_mask=self._mask(attend[:, None, None, :]),
                position_ids=lengths[:, None],
                cache=self,
                use_cache=True,
                logits_to_keep=1,
            )
        finally:
            self._pass = None
        logits: torch.Tensor = out.logits[:, -1].float()
        return logits

    def advance(self) -> None:
        """Every row has one token more (after a pass)."""
        self.lengths.add_(1)
        self._lengths = [n + 1 for n in self._lengths]

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' cache call in each attention layer: this pass's key and value
        [rows, heads, 1, head_dim] written at each row's column; what to attend over."""
        if self._pass is None:
            raise RuntimeError("the static KV cache is written only by its own passes")
        lengths, width = self._pass.lengths, self._pass.width
        rows = len(lengths)
        index = lengths.view(rows, 1, 1, 1).expand(rows, keys.shape[1], 1, keys.shape[3])
        stored_keys, stored_values = self.keys[layer][:rows], self.values[layer][:rows]
        stored_keys.scatter_(2, index, keys.to(stored_keys.dtype))
        stored_values.scatter_(2, index, values.to(stored_values.dtype))
        return stored_keys[:, :, :width], stored_values[:, :, :width]

    def keep(self, rows: Sequence[int]) -> None:
        """Only `rows` (ascending), in this order: the rows after a gap move down."""
        if any(b <= a for a, b in itertools.pairwise(rows)):
            raise ValueError("rows are kept in their order")
        moves = [(to, at) for to, at in enumerate(rows) if to != at]
        if moves:
            to = torch.tensor([m[0] for m in moves], device=self.device)
            at = torch.tensor([m[1] for m in moves], device=self.device)
            used = self.width
            for stored in (*self.keys, *self.values):
                stored[:, :, :used].index_copy_(0, to, stored[:, :, :used].index_select(0, at))
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.lengths = self.lengths.index_select(0, index)
        self._lengths = [self._lengths[i] for i in rows]
        self.slots = [self.slots[i] for i in rows]
        self.routing = self.model.route(self.slots)
        if not rows and not self.keep_storage:
            self.keys, self.values = [], []  # a long request's storage is not held idle

    def extend(self, other: KvBatch) -> None:
        """`other`'s rows (prefilled, left-padded) join after these (`other` is spent)."""
        if other.rows == 0:
            return
        layers = other.filled_layers()
        if not layers:
            raise ValueError("rows join once they are prefilled")
        if self.keys and len(layers) != len(self.keys):
            raise ValueError("both batches need the same layers to join")
        lengths = other.mask.sum(dim=1)
        first = other.width - lengths  # each row's tokens are the last of other's columns
        expected = torch.arange(other.width, device=self.device) >= first[:, None]
        if not torch.equal(other.mask.bool(), expected):
            raise ValueError("rows join with their tokens in the last columns (left padding)")
        added = lengths.tolist()
        longest = max(added)
        start, end = self.rows, self.rows + other.rows
        if not self.keys:  # room for the tokens these rows will decode, as it will double
            self._allocate(layers[0][0], len(layers), end, 2 * longest)
        self.reserve(end, longest)
        columns = (first[:, None] + torch.arange(longest, device=self.device)).clamp(
            max=other.width - 1
        )
        for (keys, values), stored_keys, stored_values in zip(
            layers, self.keys, self.values, strict=True
        ):
            index = columns[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            stored_keys[start:end, :, :longest] = keys.gather(2, index)
            stored_values[start:end, :, :longest] = values.gather(2, index)
        self.lengths = torch.cat([self.lengths, lengths.to(self.lengths.dtype)])
        self._lengths += added
        self.slots = self.slots + other.slots
        self.routing = self.model.route(self.slots)

    def _mask(self, attend: torch.Tensor) -> torch.Tensor:
        """A 4D mask as the base's attention takes it (transformers uses it as given)."""
        if self._additive:
            dtype = self.keys[0].dtype
            return torch.zeros(attend.shape, dtype=dtype, device=self.device).masked_fill(
                ~attend, torch.finfo(dtype).min
            )
        return attend

    def _allocate(self, like: torch.Tensor, layers: int, rows: int, columns: int) -> None:
        shape = (rows, like.shape[1], columns, like.shape[3])
        self.keys = [like.new_zeros(shape) for _ in range(layers)]
        self.values = [like.new_zeros(shape) for _ in range(layers)]
        self.storage = next(_STORAGE)

    @property
    def capacity(self) -> tuple[int, int]:
        """(rows, columns) the storage has room for."""
        return (self.keys[0].shape[0], self.keys[0].shape[2]) if self.keys else (0, 0)

    def reserve(self, rows: int, columns: int) -> None:
        """Room for `rows` rows of `columns` columns, doubling what is short (new storage:
        what was captured over the old is stale)."""
        capacity, room = self.capacity
        if not self.keys or (rows <= capacity and columns <= room):
            return  # no storage: the first rows to join bring it
        grown_rows = max(rows, 2 * capacity) if rows > capacity else capacity
        grown_columns = max(columns, 2 * room) if columns > room else room
        for stored in (self.keys, self.values):
            for i, old in enumerate(stored):
                new = old.new_zeros((grown_rows, old.shape[1], grown_columns, old.shape[3]))
                new[: old.shape[0], :, : old.shape[2]] = old
                stored[i] = new
        self.storage = next(_STORAGE)
