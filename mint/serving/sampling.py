"""Per-request sampling inside a shared batch.

Each row of a batch draws its next token with its own temperature, top-p and seeded
generator, so a request's output depends on its seed and its own logits, never on which
requests it shared the batch with, and requests with different sampling settings can
share one forward pass. The processor turns each sampled row into a one-hot score row,
which greedy decoding then picks; greedy rows (temperature 0) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .requests import Sampling


class PerRequestSampler(LogitsProcessor):
    """For transformers' `generate`: (input_ids, scores [batch, vocab]) -> scores."""

    def __init__(self, samplings: Sequence[Sampling]) -> None:
        self.rows = [
            (s.temperature, s.top_p, torch.Generator().manual_seed(s.seed)) for s in samplings
        ]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        for i, (temperature, top_p, generator) in enumerate(self.rows):
            if temperature > 0:
                token = draw(scores[i], temperature, top_p, generator)
                out[i] = float("-inf")
                out[i, token] = 0.0
        return out


def draw(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One token from softmax(logits / temperature), restricted to the smallest set of
    most likely tokens whose probability reaches `top_p` (nucleus sampling)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above
        sorted_probs[before >= top_p] = 0.0  # the top token always stays (before = 0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
