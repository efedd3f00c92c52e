"""The running batch's static KV cache: each row computes what it would alone, through
joins (after growth of its rows and columns), leaves from the middle, rows in two rank
classes and the bare base, with an additive (eager) mask as with a boolean one; and so
does the padded pass that CUDA graphs capture (run here without capturing)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.kv_batch import KvBatch
from mint.serving.packed_model import PackedLoraModel, cache_keyword
from mint.serving.rank_classes import SlotLayout
from mint.serving.static_kv import StaticKvBatch
from tests.serving.conftest import Pair, byte_llama

CPU = torch.device("cpu")


def packed(pair: Pair, attention: str) -> PackedLoraModel:
    """Slots 1-2 of rank 4, 3-4 of rank 8: a in slot 1, b in slot 3."""
    base = byte_llama()
    base.config._attn_implementation = attention
    layout = SlotLayout.parse("4:3,8:3", 3, pair.max_rank)
    model = PackedLoraModel(base, ["q_proj", "v_proj"], layout)
    model.load(1, pair.weights["a"])
    model.load(3, pair.weights["b"])
    return model


def prefilled(model: PackedLoraModel, prompts: list[list[int]], slots: list[int]) -> KvBatch:
    """A cohort as the scheduler makes it: prompts left-padded, one pass."""
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
    batch = KvBatch(model, slots, CPU)
    batch.forward(ids, mask)
    return batch


def solo(model: PackedLoraModel, prompt: list[int], slot: int, fed: list[int]) -> torch.Tensor:
    """The logits after `prompt` then `fed`, run alone."""
    ids = torch.tensor([prompt + fed])
    with torch.no_grad():
        logits: torch.Tensor = model.run(ids, [slot]).logits[0, -1].float()
    return logits


@pytest.mark.parametrize(
    ("attention", "padded"), [("sdpa", False), ("eager", False), ("sdpa", True)]
)
def test_rows_compute_what_they_would_alone_through_joins_and_leaves(
    pair: Pair, attention: str, padded: bool
) -> None:
    model = packed(pair, attention)
    graphs = DecodeGraphs(model.layout, capture=False)
    batch = StaticKvBatch(model, CPU, keep_storage=padded)
    prompts = {"p": [5, 6, 7], "q": [9] * 11, "r": [3, 1], "s": [8] * 6, "t": [2] * 20}
    slots = {"p": 1, "q": 3, "r": 0, "s": 1, "t": 3}
    fed: dict[str, list[int]] = {k: [] for k in prompts}
    running: list[str] = []

    def join(names: list[str]) -> None:
        batch.extend(prefilled(model, [prompts[n] for n in names], [slots[n] for n in names]))
        running.extend(names)
        for n in names:
            fed[n] = []  # a request again, from its prompt

    def decode(steps: int) -> None:
        for _ in range(steps):
            ids = torch.tensor([[40 + len(fed[n]) + i] for i, n in enumerate(running)])
            with torch.no_grad():
                # padded: to 1, 2, 4 … rows and columns, as the captured passes run
                logits = graphs.forward(batch, ids) if padded else batch.forward(ids)
            for i, n in enumerate(running):
                fed[n].append(int(ids[i, 0]))
                expected = solo(model, prompts[n], slots[n], fed[n])
                torch.testing.assert_close(logits[i], expected, rtol=1e-4, atol=1e-4)

    def leave(names: set[str]) -> None:
        kept = [i for i, n in enumerate(running) if n not in names]
        batch.keep(kept)
        running[:] = [running[i] for i in kept]

    join(["p", "q"])
    decode(3)
    join(["r", "s", "t"])  # more rows and columns than it had: its storage grows
    decode(2)
    leave({"q", "r"})  # from the middle: s and t move down
    decode(2)
    join(["q"])
    decode(1)
    leave({"p", "s", "t", "q"})
    assert batch.rows == 0 and batch.width == 0
    assert batch.capacity == (0, 0) or padded  # given back, unless passes are captured
    join(["r"])
    decode(1)


def test_rows_join_only_with_their_tokens_in_the_last_columns(pair: Pair) -> None:
    model = packed(pair, "sdpa")
    cohort = prefilled(model, [[1, 2, 3], [4]], [1, 2])
    cohort.mask[1] = torch.tensor([1, 0, 1])  # a hole: not how a cohort is made
    with pytest.raises(ValueError, match="last columns"):
        StaticKvBatch(model, CPU).extend(cohort)
    batch = StaticKvBatch(model, CPU)
    with pytest.raises(ValueError, match="one token for each"):
        batch.forward(torch.tensor([[1]]))
    with pytest.raises(ValueError, match="once they are prefilled"):
        batch.extend(KvBatch(model, [1], CPU))
    base: Any = model.base
    base.config._attn_implementation = "flex_attention"  # takes no 4D mask as given
    with pytest.raises(ValueError, match="sdpa or eager"):
        StaticKvBatch(model, CPU)


def test_the_cache_goes_by_the_name_the_installed_transformers_takes(pair: Pair) -> None:
    """transformers renamed `past_key_values` to `cache`; under the wrong name a cache
    would vanish into `**kwargs` and every pass would see no past."""

    def before(input_ids: torch.Tensor, past_key_values: object = None, **kw: object) -> None:
        """As transformers 5.17 (the GPU machine's) has it."""

    def after(input_ids: torch.Tensor, cache: object = None, **kw: object) -> None:
        """As transformers 5.24 has it."""

    assert cache_keyword(before) == "past_key_values" and cache_keyword(after) == "cache"
    model = packed(pair, "sdpa")
    assert model.cache_keyword in inspect.signature(model.base.forward).parameters
