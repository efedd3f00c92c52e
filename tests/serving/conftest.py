"""Strong LoRA adapters on the tiny Llama: PEFT holding them (the correctness reference)
and a serving engine holding the same weights, for generation tests. `pair`: two of
rank 4; `ranks`: three of ranks 1, 8 and 16, served from rank classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.serving.engine import ServingEngine
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.rank_classes import SlotLayout
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable
from mint.tokenizer import VOCAB_SIZE


def byte_llama() -> Any:
    """The tiny Llama over the byte tokenizer's vocabulary."""
    return build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=0)


@dataclass(frozen=True)
class Pair:
    reference: PeftModel  # every adapter, by name ("a" and "b", or "r1", "r8", "r16")
    weights: dict[str, LoraWeights]
    refs: dict[str, RevisionRef]
    max_rank: int = 8

    def engine(self, slots: int = 8, rank_classes: str | None = None) -> ServingEngine:
        """A fresh engine with every adapter resident; `rank_classes` as a node's setting
        (None: one class of `max_rank`)."""
        layout = (
            SlotLayout.uniform(slots, self.max_rank)
            if rank_classes is None
            else SlotLayout.parse(rank_classes, slots, self.max_rank)
        )
        model = PackedLoraModel(byte_llama(), ["q_proj", "v_proj"], layout)
        engine = ServingEngine(model, SlotTable(layout.sizes, 2**26), "", 512, 0, 1)
        for name, ref in self.refs.items():
            engine.load(ref, self.weights[name])
        return engine


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return strong_adapters(tmp_path_factory, {"a": (4, 1), "b": (4, 2)}, max_rank=8)


@pytest.fixture(scope="session")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    wanted = {"r1": (1, 3), "r8": (8, 4), "r16": (16, 5)}
    return strong_adapters(tmp_path_factory, wanted, max_rank=32)  # r8 + r16 stack: 24


def strong_adapters(
    tmp_path_factory: pytest.TempPathFactory, wanted: dict[str, tuple[int, int]], max_rank: int
) -> Pair:
    """Adapters {name: (rank, seed)} saved by PEFT, and PEFT holding all of them."""
    folders = {}
    for name, (rank, seed) in wanted.items():
        folder = tmp_path_factory.mktemp(name)
        lora = attach_lora(byte_llama(), rank=rank, seed=seed)
        with torch.no_grad():  # make the adapters strong enough to change greedy choices
            for p in lora.parameters():
                if p.requires_grad:
                    p.mul_(8)
        lora.save_pretrained(str(folder))
        folders[name] = folder
    first, *others = wanted
    reference = PeftModel.from_pretrained(byte_llama(), folders[first], adapter_name=first)
    for name in others:
        reference.load_adapter(str(folders[name]), adapter_name=name)
    reference.eval()
    weights = {}
    for name in wanted:
        cfg: Any = reference.peft_config[name]  # a LoraConfig
        state = get_peft_model_state_dict(reference, adapter_name=name)
        weights[name] = LoraWeights.from_peft(state, cfg.lora_alpha)
    refs = {n: RevisionRef(f"id-{n}", f"acme/{n}", 1, "0" * 64, 0) for n in weights}
    return Pair(reference, weights, refs, max_rank)
