"""Base models built in code (no hub) and their fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from .base_dir import check_base_dir

# Config keys that describe the library that wrote a config, not the model, or that
# save_pretrained fills in (the class name; the dtype, which each tensor's hash covers):
# a base must keep its fingerprint through a save and a load.
_VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "architectures",
    "dtype",
    "torch_dtype",
}


def tiny_llama_config(
    hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 256
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


def build_base(config: LlamaConfig, seed: int = 0) -> LlamaForCausalLM:
    """A causal LM from `config` with weights drawn from `seed`: same seed, same bytes."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.train(False)  # inference mode: no dropout
    return model


def fingerprint(model: PreTrainedModel) -> str:
    """sha256 over the architecture config and every parameter's name, dtype, shape, bytes.

    Two bases with the same shapes but different weights get different fingerprints.
    """
    digest = hashlib.sha256()
    config: dict[str, Any] = {
        k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        header = f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}\n"
        digest.update(header.encode())
        flat = tensor.detach().contiguous().reshape(-1).cpu()
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_base_dir(path: str) -> PreTrainedModel:
    """A local `transformers` causal-LM directory as a base (safetensors weights only)."""
    from transformers import AutoModelForCausalLM

    check_base_dir(path, tokenizer=False)

    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    model.train(False)
    return model


def place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move `model` to `device` in `dtype` as `from_pretrained(dtype=...)` loads one: its
    parameters and saved buffers in `dtype`, the buffers it computes itself (a Llama's
    rotary frequencies) in their own dtype, so positions stay exact in bfloat16."""
    saved = set(model.state_dict())
    computed = {n: b for n, b in model.named_buffers() if n not in saved}
    model.to(device=device, dtype=dtype)
    for name, buffer in computed.items():
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, buffer.to(device))
