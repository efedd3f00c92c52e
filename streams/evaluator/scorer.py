"""A suite's examples scored through a revision, with the serving engine's `score` (the
same packed-slot forward pass an inference node's Score RPC runs), in process.

The evaluator holds the base itself rather than asking the router: a node loads only
what the controller places, and an evaluation must neither wait for placement nor take
serving slots from requests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mint.domain.errors import InvalidArgument
from mint.domain.gates import Example
from mint.models.base import place, served_base, served_fingerprint
from mint.serving.device import TensorHome, resolve
from mint.serving.engine import ServingEngine
from mint.serving.loading import weights_from_bytes
from mint.serving.packed_model import PackedLoraModel
from mint.serving.rank_classes import SlotLayout
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable
from mint.tokenizer import byte_tokenizer, load_tokenizer_dir

SLOT_BUDGET_BYTES = 1 << 30  # one revision at a time


@dataclass(frozen=True)
class Scored:
    mean_token_logprob: float  # over every continuation token of every example
    tokens: int


class SuiteScorer:
    """Scores one revision at a time on the base this process holds."""

    def __init__(
        self,
        base_dir: str | None = None,
        base_seed: int = 0,
        targets: Sequence[str] = ("q_proj", "v_proj"),
        max_rank: int = 64,
        max_tokens: int = 2048,
        home: TensorHome | None = None,
    ) -> None:
        base: Any = served_base(base_dir, base_seed)
        self.tokenizer = load_tokenizer_dir(base_dir) if base_dir else byte_tokenizer()
        self.base_fingerprint = served_fingerprint(base_dir, base)  # as nodes compute it
        home = home or resolve()
        place(base, home.device, home.dtype)
        layout = SlotLayout.uniform(2, max_rank)
        model = PackedLoraModel(base, list(targets), layout)
        self.engine = ServingEngine(
            model,
            SlotTable(layout.sizes, SLOT_BUDGET_BYTES),
            self.base_fingerprint,
            max_tokens,
            pad_token_id=int(self.tokenizer.pad_token_id),
            eos_token_id=int(self.tokenizer.eos_token_id),
        )
        self._one_at_a_time = threading.Lock()

    def score(self, ref: RevisionRef, weights: bytes, examples: Sequence[Example]) -> Scored:
        """The revision's mean log-prob per continuation token over `examples` (the
        weights are checked against `ref`'s sha256 before use)."""
        if ref.base_fingerprint != self.base_fingerprint:
            raise InvalidArgument(
                f"{ref.label} is bound to base {ref.base_fingerprint[:12]}…; this evaluator "
                f"holds {self.base_fingerprint[:12]}…"
            )
        loaded = weights_from_bytes(weights, ref.weights_sha256, ref.config_json)
        with self._one_at_a_time:
            self.engine.load(ref, loaded)
            lease = self.engine.acquire([(ref, 1.0)])
            try:
                logprobs = [
                    p
                    for example in examples
                    for p in self.engine.score(
                        self._ids(example.prompt), self._ids(example.continuation), lease.slot
                    )
                ]
            finally:
                self.engine.release(lease)
                self.engine.evict(ref)
        return Scored(sum(logprobs) / len(logprobs), len(logprobs))

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])
