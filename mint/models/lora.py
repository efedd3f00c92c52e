"""LoRA adapters with peft, and reading their weights from safetensors bytes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load as load_safetensors
from transformers import PreTrainedModel


def attach_lora(
    base: PreTrainedModel,
    rank: int = 8,
    alpha: int = 16,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    seed: int = 0,
) -> PeftModel:
    """Wrap `base` with a LoRA whose B is random too, so the adapter visibly changes outputs."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False
    )
    model = get_peft_model(base, config)
    model.train(False)
    return model


def load_adapter_weights(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors from `adapter_model.safetensors` bytes; never pickle, never a temp file."""
    return load_safetensors(data)  # safetensors only: no pickle can run from user bytes
