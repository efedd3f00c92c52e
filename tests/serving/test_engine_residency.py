"""The engine's residency agrees with its slot table whatever evicts: a load that cannot
fit changes nothing, and evictions made for a stack are reported like any other."""

from __future__ import annotations

import pytest
import torch

from mint.domain.errors import ResourceExhausted
from mint.models.base import build_base, tiny_llama_config
from mint.serving.engine import ServingEngine, weights_bytes
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable

TARGETS = ("q_proj", "v_proj")
HIDDEN, LAYERS = 64, 2


def weights(rank: int, seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights(
        {
            f"model.layers.{layer}.self_attn.{t}": (
                torch.randn(rank, HIDDEN, generator=g),
                torch.randn(HIDDEN, rank, generator=g),
                1.0,
            )
            for layer in range(LAYERS)
            for t in TARGETS
        }
    )


def ref(name: str) -> RevisionRef:
    return RevisionRef(f"id-{name}", f"acme/{name}", 1, "0" * 64, 0)


def engine(budget_bytes: int, slots: int = 8) -> ServingEngine:
    base = build_base(tiny_llama_config(hidden=HIDDEN, layers=LAYERS), seed=0)
    model = PackedLoraModel(base, list(TARGETS), slots, max_rank=8)
    return ServingEngine(model, SlotTable(slots, budget_bytes), "", 64, 0, 1)


def test_a_load_that_cannot_fit_leaves_the_resident_set_servable() -> None:
    small, big = weights(2, 1), weights(4, 3)
    node = engine(budget_bytes=weights_bytes(small) * 2 + weights_bytes(big) // 4)
    node.load(ref("a"), small)
    node.load(ref("b"), weights(2, 2), pinned=True)
    with pytest.raises(ResourceExhausted):
        node.load(ref("c"), big)  # evicting a alone would not make room: nothing goes
    assert node.resident() == [ref("a"), ref("b")]
    with node.lease([(ref("a"), 1.0)]) as lease:  # was a KeyError: the table had lost it
        assert lease.slot > 0
    assert node.take_evicted() == []
    assert node.evict(ref("a"))  # and it can still be evicted on purpose


def test_evictions_made_for_a_stack_are_reported_and_forgotten() -> None:
    w = weights(2, 1)
    node = engine(budget_bytes=weights_bytes(w) * 4)  # room for four rank-2 adapters
    for name in "abc":
        node.load(ref(name), weights(2, ord(name)))
    with node.lease([(ref("b"), 0.5), (ref("c"), 0.5)]) as lease:  # rank 4: two adapters' room
        assert lease.slot > 0
    assert node.take_evicted() == [ref("a")]  # the least recently used; never its own parts
    assert node.resident() == [ref("b"), ref("c")]
    with pytest.raises(Exception, match="not resident"):
        node.acquire([(ref("a"), 1.0)])
