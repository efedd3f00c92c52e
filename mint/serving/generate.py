"""Batched generation over packed adapters: one forward pass per step for the whole
batch, each sample with its own adapter slot, left-padded prompts, a KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mint.domain.errors import InvalidArgument

from .packed_model import PackedLoraModel

MAX_NEW_TOKENS = 512


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> Sampling:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InvalidArgument(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}")
        if not 0.0 <= self.temperature <= 5.0:
            raise InvalidArgument("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidArgument("top_p must be in (0, 1]")
        return self


@torch.no_grad()
def generate(
    model: PackedLoraModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    slot_ids: torch.Tensor,
    sampling: Sampling,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
) -> torch.Tensor:
    """New tokens [batch, ≤ max_new_tokens], padded after a sample's `eos_token_id`
    (None: no early stop).

    The decoding loop is transformers' own `generate`, run with every sample's adapter
    slot applied in each forward pass; sampling is seeded per call.
    """
    sampling.check()
    options: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,  # None: no early stop, whatever the model's default
    }
    if sampling.temperature > 0:
        options.update(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0
        )
    else:
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with model.adapters(slot_ids), torch.random.fork_rng():
        torch.manual_seed(sampling.seed)
        out: torch.Tensor = model.base.generate(  # type: ignore[operator]
            input_ids=input_ids, attention_mask=attention_mask, **options
        )
    return out[:, input_ids.shape[1] :]
