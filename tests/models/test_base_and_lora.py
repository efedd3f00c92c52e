"""Base models from a config and seed; LoRA adapters in the PEFT layout, read as bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora, load_adapter_weights

FINGERPRINT_SNIPPET = (
    "from mint.models.base import build_base, fingerprint, tiny_llama_config;"
    "print(fingerprint(build_base(tiny_llama_config(), seed=7)))"
)


def _tokens() -> torch.Tensor:
    return torch.arange(12).reshape(2, 6) % 256


def test_fingerprint_is_stable_across_processes() -> None:
    here = fingerprint(build_base(tiny_llama_config(), seed=7))
    there = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_SNIPPET], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert here == there
    assert len(here) == 64


def test_same_shapes_different_weights_differ() -> None:
    a = build_base(tiny_llama_config(), seed=1)
    b = build_base(tiny_llama_config(), seed=2)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(build_base(tiny_llama_config(layers=3), seed=1)) != fingerprint(a)


def test_lora_saved_in_peft_layout_loads_back_from_bytes(tmp_path: Path) -> None:
    config = tiny_llama_config()
    base_out = build_base(config, seed=3)(_tokens()).logits
    model = attach_lora(build_base(config, seed=3), rank=4, seed=11)
    with torch.no_grad():
        adapted_out = model(_tokens()).logits
    assert not torch.allclose(adapted_out, base_out), "the adapter must change the outputs"

    model.save_pretrained(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md"]
    )
    weights = load_adapter_weights((tmp_path / ADAPTER_WEIGHTS).read_bytes())
    expected = get_peft_model_state_dict(model)
    assert weights.keys() == expected.keys()
    assert any(".lora_A." in k for k in weights) and any(".lora_B." in k for k in weights)
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor)

    reloaded = PeftModel.from_pretrained(build_base(config, seed=3), tmp_path)
    with torch.no_grad():
        assert torch.allclose(reloaded(_tokens()).logits, adapted_out, atol=1e-6)


def test_fingerprint_survives_save_pretrained_and_loading_the_directory(tmp_path: Path) -> None:
    from mint.models.base import load_base_dir

    model = build_base(tiny_llama_config(), seed=0)
    before = fingerprint(model)
    model.save_pretrained(str(tmp_path))  # also fills in config fields (architectures, dtype)
    assert fingerprint(model) == before
    assert fingerprint(load_base_dir(str(tmp_path))) == before


def test_a_placed_base_has_the_dtypes_from_pretrained_gives_it(tmp_path: Path) -> None:
    """Parameters in bfloat16, the rotary frequencies still float32, the same logits."""
    from transformers import AutoModelForCausalLM

    from mint.models.base import place

    model = build_base(tiny_llama_config(), seed=0)
    model.save_pretrained(str(tmp_path))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    before = fingerprint(model)
    place(model, torch.device("cpu"), torch.bfloat16)
    dtypes = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert dtypes == {n: t.dtype for n, t in [*loaded.named_parameters(), *loaded.named_buffers()]}
    assert dtypes["model.rotary_emb.inv_freq"] == torch.float32
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(model(_tokens()).logits, loaded(_tokens()).logits)
    assert fingerprint(model) != before  # a fingerprint is of the weights as stored
