"""A cohort's rows prefilling together, each with its own adapter slot, in one
left-padded KV cache (transformers' DynamicCache), chunk by chunk; once their prompts
are done they join the running batch (`StaticKvBatch`). Which rows use which rank class
(the routing) is worked out when rows leave, not in each pass.

Per layer the cache is [rows, heads, width, head_dim]; `mask` [rows, width] says which
columns hold a row's tokens (the left padding holds none). Positions count only a row's
own tokens, so a row computes what it would alone. Rows leaving (`keep`) are dropped and
columns no row uses any more are trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .packed_model import PackedLoraModel
from .routing import SlotRouting


class KvBatch:
    def __init__(self, model: PackedLoraModel, slots: Sequence[int], device: torch.device) -> None:
        """`len(slots)` rows with nothing in the cache yet."""
        self.model, self.device = model, device
        self.cache = DynamicCache()
        self.mask = torch.zeros((len(slots), 0), dtype=torch.long, device=device)
        self.slots: list[int] = []
        self.routing = self._route(slots)

    def _route(self, slots: Sequence[int]) -> SlotRouting:
        self.slots = list(slots)
        return self.model.route(self.slots)

    @property
    def rows(self) -> int:
        return len(self.slots)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Append `ids` [rows, n] (`mask` 0 where a row has no token) to every row; the
        logits [rows, vocab] (float32) after each row's last column."""
        full = torch.cat([self.mask, mask], dim=1)
        positions = (full.cumsum(-1) - 1)[:, -ids.shape[1] :].clamp(min=0)
        out = self.model.run(
            ids,
            self.routing,
            attention_mask=full,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.mask = full
        logits: torch.Tensor = out.logits[:, -1].float()
        return logits

    def keep(self, rows: Sequence[int]) -> None:
        """Only `rows`, in this order; the columns none of them uses go."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        used = self.mask.index_select(0, index).any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.width
        self.mask = self.mask.index_select(0, index)[:, start:]
        self.routing = self._route([self.slots[i] for i in rows])
        for layer in self._layers():
            keys, values = _filled(layer)
            layer.keys = keys.index_select(0, index)[:, :, start:]
            layer.values = values.index_select(0, index)[:, :, start:]

    def filled_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (keys, values) [rows, heads, width, head_dim]."""
        return [_filled(layer) for layer in self._layers()]

    def _layers(self) -> list[DynamicLayer]:
        """The cache's filled layers (none before the first pass)."""
        layers = []
        for layer in self.cache.layers:
            if type(layer) is not DynamicLayer:  # sliding windows drop columns on their own
                raise ValueError("batching rows needs full attention in every layer")
            if layer.is_initialized:
                layers.append(layer)
        return layers


def _filled(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.keys is None or layer.values is None:
        raise ValueError("this cache layer holds nothing yet")
    return layer.keys, layer.values
