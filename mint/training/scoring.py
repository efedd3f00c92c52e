"""An update's evaluation: the user's examples scored through the serving engine's Score
path (the packed slots a node serves from), so the loss recorded is the one serving sees."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mint.serving.engine import ServingEngine
from mint.serving.loading import weights_from_bytes
from mint.serving.packed_model import PackedLoraModel
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable

from .tuning import Tokenized

SLOTS = 2  # slot 0 (no adapter) and the one revision being scored
SLOT_BUDGET_BYTES = 1 << 30


class Scorer:
    """Owns `base` (wrapped into packed slots: give it a base of its own, not the one
    training wraps)."""

    def __init__(
        self,
        base: nn.Module,
        base_fingerprint: str,
        targets: Sequence[str],
        max_rank: int = 64,
        max_tokens: int = 1024,
        pad_token_id: int = 0,
        eos_token_id: int = 1,
    ) -> None:
        model = PackedLoraModel(base, list(targets), SLOTS, max_rank)
        self.engine = ServingEngine(
            model,
            SlotTable(SLOTS, SLOT_BUDGET_BYTES),
            base_fingerprint,
            max_tokens,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
        )

    def loss(
        self, revision: RevisionRef | None, weights: bytes, examples: Sequence[Tokenized]
    ) -> float:
        """Mean negative log-likelihood per completion token under `revision` (None: the
        bare base)."""
        if revision is None:
            return _mean_loss([self.engine.score(p, c, 0) for p, c in examples])
        self.engine.load(
            revision, weights_from_bytes(weights, revision.weights_sha256, revision.config_json)
        )
        try:
            with self.engine.lease([(revision, 1.0)]) as lease:
                return _mean_loss([self.engine.score(p, c, lease.slot) for p, c in examples])
        finally:
            self.engine.evict(revision)


def _mean_loss(logprobs: Sequence[Sequence[float]]) -> float:
    tokens = [x for row in logprobs for x in row]
    return -sum(tokens) / len(tokens)
