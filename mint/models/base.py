"""Base models built in code (no hub) and their fingerprints."""

from __future__ import annotations

import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from mint.tokenizer import VOCAB_SIZE

from .base_dir import check_base_dir
from .base_files import describe_base_dir


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
    """The fingerprint of `model` as `save_pretrained` stores it (see base_files): two
    bases with the same shapes but different weights get different fingerprints, and the
    folder a base is saved to has the base's."""
    bars = hf_logging.is_progress_bar_enabled()  # a scratch save: no bar on stderr
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with tempfile.TemporaryDirectory(prefix="mint-fingerprint-") as folder:
            model.save_pretrained(folder, safe_serialization=True)
            return describe_base_dir(folder).fingerprint
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def served_base(base_dir: str | None, seed: int = 0) -> PreTrainedModel:
    """The base a node, evaluator or trainer serves: the folder's, else the built-in tiny
    base of `seed` over the byte tokenizer's vocabulary."""
    if base_dir:
        return load_base_dir(base_dir)
    return build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=seed)


def served_fingerprint(base_dir: str | None, base: PreTrainedModel) -> str:
    """The fingerprint adapters for `served_base(base_dir, ...)` name: of the folder's
    files if there is one (as `mint base register` computes it, whatever transformers
    makes of the config), else of `base` as stored."""
    return describe_base_dir(base_dir).fingerprint if base_dir else fingerprint(base)


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
