"""Batched generation over packed adapters: one forward pass per step for the whole
batch, each sample with its own adapter slot, left-padded prompts, a KV cache."""

from __future__ import annotations

from typing import Any

import torch

from .packed_model import PackedLoraModel
from .requests import Sampling

__all__ = ["Sampling", "generate"]


@torch.no_grad()
def generate(
    model: PackedLoraModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    slot_ids: torch.Tensor,
    sampling: Sampling,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    streamer: Any = None,
) -> torch.Tensor:
    """New tokens [batch, ≤ max_new_tokens], padded after a sample's `eos_token_id`
    (None: no early stop). A `streamer` (transformers' BaseStreamer) gets the prompt ids,
    then each step's new tokens [batch] as they are decoded.

    The decoding loop is transformers' own `generate`, run with every sample's adapter
    slot applied in each forward pass; sampling is seeded per call.
    """
    sampling.check()
    options: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,  # None: no early stop, whatever the model's default
        "streamer": streamer,
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
