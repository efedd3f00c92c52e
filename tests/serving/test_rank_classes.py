"""Rank classes: the layout a node's slots follow, the slot table's per-class slots and
shared byte budget, and the packed model against PEFT on adapters of ranks 1, 8 and 16
(and a stack of 24) in one batch, each computed at its own class's rank."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mint.domain.errors import InvalidArgument, ResourceExhausted
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.rank_classes import RankClass, SlotLayout
from mint.serving.residency import ResidentKey, SlotTable
from mint.serving.slots import gathered_lora
from tests.serving.conftest import Pair, byte_llama


def key(n: int) -> ResidentKey:
    return ResidentKey(f"a{n}", 1)


def test_auto_classes_are_the_powers_of_two_up_to_the_largest_rank() -> None:
    layout = SlotLayout.parse("auto", 4, 12)
    assert layout.classes == tuple(RankClass(r, 3) for r in (1, 2, 4, 8, 12))
    assert [layout.locate(s) for s in (1, 3, 4, 15)] == [(0, 1), (0, 3), (1, 1), (4, 3)]
    assert [layout.first_slot(i) for i in range(5)] == [1, 4, 7, 10, 13]
    assert layout.fitting(5) == [3, 4] and layout.fitting(1) == [0, 1, 2, 3, 4]
    with pytest.raises(InvalidArgument, match="rank 13 exceeds this node's largest, 12"):
        layout.fitting(13)
    with pytest.raises(ValueError, match=r"slot 16 is out of range 1\.\.15"):
        layout.locate(16)
    assert SlotLayout.parse("16:2,4", 5, 16).classes == (RankClass(4, 4), RankClass(16, 2))


def test_a_slot_is_taken_in_its_class_and_evicts_only_there() -> None:
    table = SlotTable([2, 1], budget_bytes=1000)  # rank class 0: slots 1, 2; class 1: slot 3
    assert table.admit(key(0), 10, rank_class=1) == (3, [])
    assert table.admit(key(1), 5, rank_class=0) == (1, [])
    assert table.admit(key(2), 5, rank_class=0) == (2, [])
    slot, evicted = table.admit(key(3), 10, rank_class=1)  # key(0) is older, but in class 1
    assert (slot, evicted) == (3, [key(0)])
    table.acquire(key(3))
    with pytest.raises(ResourceExhausted, match="pinned or in use"):
        table.admit(key(4), 10, rank_class=1)  # its one slot is in use: class 0's do not help
    assert table.class_usage(0) == (2, 0) and table.class_usage(1) == (1, 1)


def test_the_byte_budget_is_shared_and_counts_what_each_class_takes() -> None:
    table = SlotTable([3, 3], budget_bytes=100)
    table.admit(key(0), 40, rank_class=1)
    table.admit(key(1), 10, rank_class=0)
    table.admit(key(2), 10, rank_class=0)
    slot, evicted = table.admit(key(3), 90, rank_class=1)  # a free slot, but bytes: LRU go
    assert slot > 3 and evicted == [key(0), key(1)] and table.used_bytes == 100


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "use", "done"]),
            st.integers(0, 10),
            st.integers(0, 2),
            st.integers(1, 60),
        ),
        max_size=60,
    )
)
def test_classes_keep_their_slots_under_any_sequence(ops: list[tuple[str, int, int, int]]) -> None:
    table = SlotTable([1, 2, 3], budget_bytes=150)
    ranges = {0: {1}, 1: {2, 3}, 2: {4, 5, 6}}
    for op, n, rank_class, size in ops:
        k = key(n)
        try:
            if op == "admit":
                slot, _ = table.admit(k, size, pinned=(n == 0), rank_class=rank_class)
                assert slot in ranges[table._entries[k].rank_class]
            elif op == "use" and k in table:
                table.acquire(k)
            elif op == "done" and table.in_use(k):
                table.release(k)
        except ResourceExhausted:
            pass
        assert table.used_bytes <= 150
        for index, slots in ranges.items():
            assert table.class_usage(index)[0] <= len(slots)


def stack_r8_r16(ranks: Pair) -> str:
    if "s" not in ranks.reference.peft_config:
        ranks.reference.add_weighted_adapter(["r8", "r16"], [0.7, 0.5], "s", combination_type="cat")
    return "s"


def test_mixed_ranks_in_one_batch_equal_peft_each_at_its_own_rank(ranks: Pair) -> None:
    calls: list[tuple[int, int]] = []  # (the bank's rank, the rows it ran on), per call

    def counting(*args: torch.Tensor) -> torch.Tensor:
        x, a_bank = args[0], args[1]
        calls.append((a_bank.shape[1], x.shape[0]))
        return gathered_lora(*args)

    layout = SlotLayout.parse("auto", 3, 32)  # ranks 1, 2, 4, 8, 16, 32: two slots each
    model = PackedLoraModel(byte_llama(), ["q_proj", "v_proj"], layout, gathered=counting)
    stack = LoraWeights.stack([(ranks.weights["r8"], 0.7), (ranks.weights["r16"], 0.5)])
    held = {**ranks.weights, "s": stack}
    slots = {name: layout.first_slot(layout.fitting(w.rank)[0]) for name, w in held.items()}
    for name, w in held.items():
        model.load(slots[name], w)
    layer = "model.layers.0.self_attn.q_proj"
    assert [model.slot_weights(layer, slots[n])[0].shape[0] for n in held] == [1, 8, 16, 32]
    names = ["r16", "__base__", "r1", stack_r8_r16(ranks), "r8"]
    tokens = torch.tensor([[72, 105, 33, 87, 111, 65]] * len(names))
    with torch.no_grad():
        expected = ranks.reference(tokens, adapter_names=names).logits
        calls.clear()
        got = model(tokens, [slots.get(n, 0) for n in names])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    wrapped = len(model.layers)
    assert sorted(calls) == sorted([(1, 1), (8, 1), (16, 1), (32, 1)] * wrapped)
    for i in range(len(names)):  # the adapters matter: no two rows alike
        assert all(not torch.allclose(got[i], got[j]) for j in range(i))
    with torch.no_grad():  # one class for every row: one call per layer; bare rows: none
        calls.clear()
        model(tokens[:2], [slots["r8"], slots["r8"]])
        assert calls == [(8, 2)] * wrapped
        calls.clear()
        model(tokens[:2], [0, 0])
        assert calls == []
