"""Per-request sampling inside a shared batch.

Each request draws its next token with its own temperature, top-p and seeded generator,
so its output depends on its seed and its own logits, never on which requests it shared
the batch with, and requests with different sampling settings share one forward pass.
Temperature 0 is greedy: the most likely token (the first of equals, as argmax picks).
"""

from __future__ import annotations

import torch

from .requests import Sampling


class Sampler:
    """One request's choice of each next token."""

    def __init__(self, sampling: Sampling) -> None:
        self.temperature, self.top_p = sampling.temperature, sampling.top_p
        self.generator = torch.Generator().manual_seed(sampling.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def draw(self, logits: torch.Tensor) -> int:
        """A token from `logits` [vocab]; drawn on the CPU, where the generator lives, so a
        seed draws the same way whatever device computed the logits."""
        return draw(logits.cpu(), self.temperature, self.top_p, self.generator)


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
