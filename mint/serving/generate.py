"""Batched generation over packed adapters: one forward pass per step for the whole
batch, each sample with its own adapter slot, left-padded prompts, a KV cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList

from .packed_model import PackedLoraModel
from .requests import Sampling
from .sampling import PerRequestSampler

__all__ = ["Sampling", "generate"]


@torch.no_grad()
def generate(
    model: PackedLoraModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    slot_ids: torch.Tensor,
    sampling: Sampling | Sequence[Sampling],
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    streamer: Any = None,
) -> torch.Tensor:
    """New tokens [batch, ≤ max_new_tokens], padded after a sample's `eos_token_id`
    (None: no early stop). A `streamer` (transformers' BaseStreamer) gets the prompt ids,
    then each step's new tokens [batch] as they are decoded.

    `sampling` is one for every sample or one per sample; they must agree on
    max_new_tokens. The decoding loop is transformers' own `generate`, run with every
    sample's adapter slot applied in each forward pass; each sample draws with its own
    temperature, top-p and seed (sampling.py), independently of its batch-mates.
    """
    rows = [sampling] * len(input_ids) if isinstance(sampling, Sampling) else list(sampling)
    for row in rows:
        row.check()
    lengths = {row.max_new_tokens for row in rows}
    if len(rows) != len(input_ids) or len(lengths) != 1:
        raise ValueError("one sampling per sample, all with the same max_new_tokens")
    options: dict[str, Any] = {
        "max_new_tokens": lengths.pop(),
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,  # None: no early stop, whatever the model's default
        "streamer": streamer,
        "do_sample": False,  # greedy over the scores, which the sampler made one-hot
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    if any(row.temperature > 0 for row in rows):
        options["logits_processor"] = LogitsProcessorList([PerRequestSampler(rows)])
    with model.adapters(slot_ids):
        out: torch.Tensor = model.base.generate(  # type: ignore[operator]
            input_ids=input_ids, attention_mask=attention_mask, **options
        )
    return out[:, input_ids.shape[1] :]
