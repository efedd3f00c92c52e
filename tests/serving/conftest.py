"""Two strong LoRA adapters on the tiny Llama: PEFT holding both (the correctness
reference) and a serving engine holding the same weights, for generation tests."""

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
from mint.serving.requests import RevisionRef
from mint.serving.residency import SlotTable
from mint.tokenizer import VOCAB_SIZE


def byte_llama() -> Any:
    """The tiny Llama over the byte tokenizer's vocabulary."""
    return build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=0)


@dataclass(frozen=True)
class Pair:
    reference: PeftModel  # adapters "a" and "b"
    weights: dict[str, LoraWeights]
    refs: dict[str, RevisionRef]

    def engine(self, slots: int = 8) -> ServingEngine:
        """A fresh engine with both adapters resident."""
        model = PackedLoraModel(byte_llama(), ["q_proj", "v_proj"], slots, 8)
        engine = ServingEngine(model, SlotTable(slots, 2**26), "", 512, 0, 1)
        for name, ref in self.refs.items():
            engine.load(ref, self.weights[name])
        return engine


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    folders = {}
    for name, seed in (("a", 1), ("b", 2)):
        folder = tmp_path_factory.mktemp(name)
        lora = attach_lora(byte_llama(), rank=4, seed=seed)
        with torch.no_grad():  # make the adapters strong enough to change greedy choices
            for p in lora.parameters():
                if p.requires_grad:
                    p.mul_(8)
        lora.save_pretrained(str(folder))
        folders[name] = folder
    reference = PeftModel.from_pretrained(byte_llama(), folders["a"], adapter_name="a")
    reference.load_adapter(str(folders["b"]), adapter_name="b")
    reference.eval()
    weights = {}
    for name in ("a", "b"):
        cfg: Any = reference.peft_config[name]  # a LoraConfig
        state = get_peft_model_state_dict(reference, adapter_name=name)
        weights[name] = LoraWeights.from_peft(state, cfg.lora_alpha)
    refs = {n: RevisionRef(f"id-{n}", f"acme/{n}", 1, "0" * 64, 0) for n in weights}
    return Pair(reference, weights, refs)
