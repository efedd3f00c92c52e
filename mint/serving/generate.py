"""Batched generation over packed adapters: one forward pass per step for the whole
batch, each sample with its own adapter slot, left-padded prompts, a KV cache."""

from __future__ import annotations

from dataclasses import dataclass

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


def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    if sampling.temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > sampling.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
    """New tokens [batch, ≤ max_new_tokens]; a finished sample is padded after its EOS."""
    sampling.check()
    generator = torch.Generator().manual_seed(sampling.seed)
    mask = attention_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model.run(
        input_ids, slot_ids, attention_mask=mask, position_ids=positions, use_cache=True
    )
    cache, logits = out.past_key_values, out.logits[:, -1]
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    produced = []
    for _ in range(sampling.max_new_tokens):
        token = _pick(logits, sampling, generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        produced.append(token)
        if eos_token_id is not None:
            finished |= token == eos_token_id
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        out = model.run(
            token[:, None],
            slot_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
    return torch.stack(produced, dim=1)
