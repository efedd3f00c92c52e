"""The engine's two tiers agree whatever evicts: a load that cannot fit changes nothing,
room made in the device slots keeps the revision in host memory (a request copies it
back), and only the host tier's evictions take a revision off the node. The node here
has rank classes 1, 2, 4 and 8, so an adapter of rank 2 takes exactly its own bytes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mint.domain.errors import DataLoss, ResourceExhausted
from mint.models.base import build_base, tiny_llama_config
from mint.serving.engine import ServingEngine, weights_bytes
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.rank_classes import SlotLayout
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


def engine(
    budget_bytes: int, slots: int = 8, host_budget_bytes: int | None = None
) -> ServingEngine:
    base = build_base(tiny_llama_config(hidden=HIDDEN, layers=LAYERS), seed=0)
    model = PackedLoraModel(base, list(TARGETS), SlotLayout.parse("auto", slots, 8))
    table = SlotTable(model.layout.sizes, budget_bytes)
    return ServingEngine(model, table, "", 64, 0, 1, host_budget_bytes=host_budget_bytes)


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


def test_room_made_for_a_stack_moves_a_slot_back_to_host_memory_only() -> None:
    w = weights(2, 1)
    node = engine(budget_bytes=weights_bytes(w) * 4)  # room for four rank-2 adapters
    for name in "abc":
        node.load(ref(name), weights(2, ord(name)))
    with node.lease([(ref("b"), 0.5), (ref("c"), 0.5)]) as lease:  # rank 4: two adapters' room
        assert lease.slot > 0
    assert node.in_device() == [ref("b"), ref("c")]  # a, least recently used, lost its slot
    assert node.take_evicted() == [] and node.resident() == [ref("a"), ref("b"), ref("c")]
    with node.lease([(ref("a"), 1.0)]) as lease:  # promoted: copied back from host memory
        name = "model.layers.1.self_attn.v_proj"
        slot_a, slot_b = node.model.slot_weights(name, lease.slot)
        a, b, _ = weights(2, ord("a")).modules[name]
        assert torch.equal(slot_a, a) and torch.equal(slot_b, b)  # a rank-2 slot, no padding
    assert node.in_device() == [ref("a"), ref("c")]


def test_the_host_tier_evicts_its_least_recently_used_beyond_its_budget() -> None:
    unit = weights_bytes(weights(2, 0))
    promotions: list[int] = []
    node = engine(budget_bytes=2 * unit, slots=3, host_budget_bytes=3 * unit)
    node.on_promote = lambda: promotions.append(1)
    node.load(ref("a"), weights(2, 1), pinned=True)
    for name in "bc":
        node.load(ref(name), weights(2, ord(name)))
    with node.lease([(ref("b"), 1.0)]):  # b is now more recently used than c
        node.load(ref("d"), weights(2, 4))  # c goes: a is pinned, b in use
        assert node.take_evicted() == [ref("c")]
        with pytest.raises(ResourceExhausted, match="host memory holds only pinned or running"):
            node.load(ref("e"), weights(4, 5))  # two units: only d could go
    assert node.resident() == [ref("a"), ref("b"), ref("d")] and node.take_evicted() == []
    assert node.in_device() == [ref("a"), ref("b")]  # d found no free slot: host only
    assert len(promotions) == 1  # b, for its request (copies made by loads are not counted)
    device, host = node.tiers()
    assert (host.adapters, host.used_bytes, host.budget_bytes) == (3, 3 * unit, 3 * unit)
    assert (device.adapters, device.used_bytes, device.slots) == (2, 2 * unit, 4 * 2)
    with pytest.raises(ResourceExhausted, match="device slot budget"):
        node.load(ref("f"), weights(6, 6))  # three units: more than the slots may hold


def test_a_host_budget_below_the_device_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="raise the host budget"):
        engine(budget_bytes=100, host_budget_bytes=99)


def test_each_revision_takes_the_smallest_class_that_fits_and_is_charged_its_slot() -> None:
    node = engine(budget_bytes=2**20, slots=2)  # ranks 1, 2, 4 and 8: one slot each
    node.load(ref("a"), weights(1, 1))
    node.load(ref("b"), weights(3, 2))  # rank 3: a rank-4 slot
    filled = [(c.rank, c.filled) for c in node.rank_classes()]
    assert filled == [(1, 1), (2, 0), (4, 1), (8, 0)]
    device, _ = node.tiers()
    rank_one = weights_bytes(weights(1, 0))
    assert device.used_bytes == node.slot_bytes[0] + node.slot_bytes[2] == 5 * rank_one
    with node.lease([(ref("a"), 1.0)]):  # the one rank-1 slot is in use: c takes a rank-2 one
        node.load(ref("c"), weights(1, 3))
        with node.lease([(ref("c"), 1.0)]) as lease:
            assert node.layout.locate(lease.slot)[0] == 1
            slot_a, _ = node.model.slot_weights("model.layers.0.self_attn.q_proj", lease.slot)
            a, _, _ = weights(1, 3).modules["model.layers.0.self_attn.q_proj"]
            assert torch.equal(slot_a[:1], a) and not slot_a[1:].any()  # zero-padded
    assert node.tiers()[0].used_bytes == 5 * rank_one + node.slot_bytes[1]


def test_weights_that_fail_their_check_after_the_copy_are_never_seen() -> None:
    """The hash check runs once the weights are in a slot, under the table's lock: until
    it returns no other thread sees the revision, and if it fails the slot is cleared."""
    w = weights(2, 1)
    node = engine(budget_bytes=weights_bytes(w) * 4)
    node.load(ref("a"), w)
    seen: list[bool] = []

    def altered() -> None:
        looking = threading.Thread(target=lambda: seen.append(node.is_resident(ref("b"))))
        looking.start()
        looking.join(timeout=0.2)
        assert looking.is_alive(), "another thread read the table while the check ran"
        raise DataLoss("adapter weights hash to x, not the recorded y")

    with pytest.raises(DataLoss, match="not the recorded"):
        node.load(ref("b"), weights(2, 2), verify=altered)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [False]  # asked during the check, answered after it: never resident
    assert node.resident() == [ref("a")] and node.in_device() == [ref("a")]
    assert node.take_evicted() == []  # never loaded, so never reported gone
    checked: list[bool] = []
    node.load(ref("b"), weights(2, 2), verify=lambda: checked.append(True))
    assert checked == [True] and node.in_device() == [ref("a"), ref("b")]
    with node.lease([(ref("b"), 1.0)]) as lease:
        name = "model.layers.0.self_attn.q_proj"
        a, _, _ = weights(2, 2).modules[name]
        assert torch.equal(node.model.slot_weights(name, lease.slot)[0], a)
