"""A few PEFT training steps: revision n+1 warm-started from revision n (or a fresh LoRA
for an adapter's first revision), learning the completions of an update's examples."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, get_peft_model, set_peft_model_state_dict
from torch import nn

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.lora import load_adapter_weights
from mint.registry import Upload
from mint.validation.examples import Example

# (prompt token ids, completion token ids)
Tokenized = tuple[list[int], list[int]]
Tokenize = Callable[[str], list[int]]
IGNORE = -100  # the label torch's cross-entropy skips: prompt and padding positions
LIBRARIES = ("torch", "peft", "transformers", "safetensors")


@dataclass(frozen=True)
class Hyperparameters:
    steps: int = 8
    learning_rate: float = 1e-2  # few steps on few examples: a large step
    rank: int = 8  # a fresh adapter's; a warm start keeps its parent's
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    max_tokens: int = 128  # per example, prompt and completion together

    def recorded(self) -> dict[str, str]:
        """As the revision's provenance records them."""
        return {
            "steps": str(self.steps),
            "learning_rate": str(self.learning_rate),
            "rank": str(self.rank),
            "alpha": str(self.alpha),
            "targets": ",".join(self.targets),
            "seed": str(self.seed),
            "max_tokens": str(self.max_tokens),
            "optimizer": "AdamW",
        }


@dataclass(frozen=True)
class Parent:
    config_json: str
    weights: bytes


def tool_versions() -> dict[str, str]:
    """The code and libraries a revision was trained with."""
    versions = {"python": platform.python_version(), "mint": _version("mint")}
    versions.update({name: _version(name) for name in LIBRARIES})
    return versions


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tokenized(examples: Sequence[Example], tokenize: Tokenize, max_tokens: int) -> list[Tokenized]:
    """Each example's tokens, cut to `max_tokens`: the completion's start (at most half)
    and as much of the prompt's end as fits."""
    pairs = []
    for example in examples:
        completion = tokenize(example.completion)[: max(1, max_tokens // 2)]
        prompt = tokenize(example.prompt)[-(max_tokens - len(completion)) :]
        pairs.append((prompt, completion))
    return pairs


def train_revision(
    base: nn.Module,
    parent: Parent | None,
    examples: Sequence[Tokenized],
    hp: Hyperparameters,
    pad_token_id: int = 0,
) -> Upload:
    """The trained adapter as PEFT saves it. `base` is wrapped for the run and given back
    bare (its own weights never change)."""
    torch.manual_seed(hp.seed)
    config = _config(parent, hp)
    model = get_peft_model(base, config)
    try:
        if parent is not None:
            set_peft_model_state_dict(model, load_adapter_weights(parent.weights))
        device = next(base.parameters()).device
        batch = _batch(examples, pad_token_id, device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate)
        model.train()
        for _ in range(hp.steps):
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()
        model.eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            saved = Path(folder)
            return Upload(
                (saved / ADAPTER_CONFIG).read_bytes(), (saved / ADAPTER_WEIGHTS).read_bytes()
            )
    finally:
        model.unload()  # the LoRA layers out again: the base is bare for the next run


def _config(parent: Parent | None, hp: Hyperparameters) -> PeftConfig:
    if parent is None:  # B starts at zero: revision 1 begins as the bare base
        return LoraConfig(r=hp.rank, lora_alpha=hp.alpha, target_modules=list(hp.targets))
    config: PeftConfig = PeftConfig.from_peft_type(  # type: ignore[no-untyped-call]
        **json.loads(parent.config_json)
    )
    config.inference_mode = False  # saved for inference; trained here
    return config


def _batch(
    examples: Sequence[Tokenized], pad_token_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Right-padded ids, their mask, and labels only on the completions."""
    width = max(len(p) + len(c) for p, c in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for row, (prompt, completion) in enumerate(examples):
        tokens = prompt + completion
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        labels[row, len(prompt) : len(tokens)] = torch.tensor(completion)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }
