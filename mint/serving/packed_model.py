"""A causal LM whose target linear layers serve packed LoRA slots.

Load adapters from PEFT's safetensors state dict (bytes in, no files), run a batch with
one slot per sample, and stack several adapters with weights into one slot as an exact
combined delta (their A matrices concatenated: the rank is the sum).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .slots import SlotBank, SlottedLinear

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraWeights:
    """One adapter, per wrapped module: (A [r, in], B [out, r], scale)."""

    modules: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]

    @classmethod
    def from_peft(
        cls,
        state: Mapping[str, torch.Tensor],
        alpha: float,
        use_rslora: bool = False,
        alpha_pattern: Mapping[str, float] | None = None,
    ) -> LoraWeights:
        """From PEFT's state dict. Each module's scale is alpha / r as PEFT computes it, with
        r that module's own rank (rank_pattern) and alpha its pattern's, if any."""
        modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            module = key.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
            b = state[f"{PEFT_PREFIX}{module}.lora_B.weight"]
            rank = a.shape[0]
            module_alpha = next(
                (
                    v
                    for k, v in (alpha_pattern or {}).items()
                    if module == k or module.endswith("." + k)
                ),
                alpha,
            )
            modules[module] = (a, b, module_alpha / (rank**0.5 if use_rslora else rank))
        return cls(modules)

    @staticmethod
    def stack(parts: Sequence[tuple[LoraWeights, float]]) -> LoraWeights:
        """Σ wᵢ·sᵢ·Bᵢ·Aᵢ as one adapter: A = [A₁; A₂; …], B = [w₁s₁B₁, w₂s₂B₂, …], scale 1.

        B is scaled in float32 and stored in the parts' dtype, so a bfloat16 stack rounds
        once, as its parts did."""
        names = set().union(*(p.modules for p, _ in parts))
        modules = {}
        for name in names:
            present = [(p.modules[name], w) for p, w in parts if name in p.modules]
            a = torch.cat([a for (a, _, _), _ in present], dim=0)
            b = torch.cat([(b.float() * (s * w)).to(b.dtype) for (_, b, s), w in present], dim=1)
            modules[name] = (a, b, 1.0)
        return LoraWeights(modules)

    def to_host(self, dtype: torch.dtype, pin: bool) -> LoraWeights:
        """These weights as the host tier keeps them: on the CPU in the serving `dtype`,
        contiguous, and page-locked if `pin` (then a copy to CUDA can run asynchronously).
        Tensors already in that form are kept, not copied."""

        def host(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device="cpu", dtype=dtype).contiguous()
            return t.pin_memory() if pin and not t.is_pinned() else t

        return LoraWeights({n: (host(a), host(b), s) for n, (a, b, s) in self.modules.items()})

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b, _ in self.modules.values())

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _, _ in self.modules.values())


class PackedLoraModel(nn.Module):
    def __init__(self, base: nn.Module, targets: Sequence[str], slots: int, max_rank: int) -> None:
        super().__init__()
        self.base = base
        self.layers: dict[str, SlottedLinear] = {}
        self.banks: list[tuple[SlotBank, list[str]]] = []  # same-shaped layers together
        shapes: dict[tuple[Any, ...], list[tuple[str, nn.Linear]]] = {}
        for name, module in list(base.named_modules()):
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
                w = module.weight
                key = (module.in_features, module.out_features, w.dtype, w.device)
                shapes.setdefault(key, []).append((name, module))
        if not shapes:
            raise ValueError(f"no linear layers named {list(targets)} in the base model")
        for (in_features, out_features, dtype, device), members in shapes.items():
            bank = SlotBank(len(members), in_features, out_features, slots, max_rank, dtype, device)
            self.banks.append((bank, [name for name, _ in members]))
            for i, (name, module) in enumerate(members):
                wrapped = SlottedLinear(module, bank.layer(i))
                parent_name, _, leaf = name.rpartition(".")
                setattr(base.get_submodule(parent_name), leaf, wrapped)
                self.layers[name] = wrapped

    @torch.no_grad()
    def load(self, slot: int, weights: LoraWeights) -> None:
        unknown = set(weights.modules) - set(self.layers)
        if unknown:
            raise ValueError(f"adapter wraps modules the base does not have: {sorted(unknown)}")
        for bank, names in self.banks:
            parts = [weights.modules[n] for n in names if n in weights.modules]
            if parts and bank.load(slot, parts):
                continue
            self._load_each(slot, weights, names)

    def _load_each(self, slot: int, weights: LoraWeights, names: list[str]) -> None:
        for name in names:
            layer = self.layers[name]
            if name in weights.modules:
                a, b, scale = weights.modules[name]
                layer.slots.copy_in(slot, a, b, scale)
            else:
                layer.slots.clear(slot)

    def clear(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.slots.clear(slot)

    def forward(self, input_ids: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """Logits for a batch where sample i uses adapter slot slot_ids[i] (0: none)."""
        logits: torch.Tensor = self.run(input_ids, slot_ids).logits
        return logits

    def run(self, input_ids: torch.Tensor, slot_ids: torch.Tensor, **kwargs: Any) -> Any:
        """The base model's full output (pass cache / use_cache for decoding)."""
        with self.adapters(slot_ids):
            return self.base(input_ids, **kwargs)

    @property
    def device(self) -> torch.device:
        """Where the slot banks (and the base's wrapped layers) are."""
        return self.banks[0][0].A.device

    @contextlib.contextmanager
    def adapters(self, slot_ids: torch.Tensor) -> Iterator[None]:
        """Within the block, every forward pass of the base applies sample i's slot
        (`slot_ids` is moved to the slots' device if it is not there)."""
        slot_ids = slot_ids.to(self.device, non_blocking=True)
        for layer in self.layers.values():
            layer.slot_ids = slot_ids
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.slot_ids = None
