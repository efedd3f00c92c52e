"""A causal LM whose target linear layers serve packed LoRA slots.

Load adapters from PEFT's safetensors state dict (bytes in, no files), run a batch with
one slot per sample, and stack several adapters with weights into one slot as an exact
combined delta (their A matrices concatenated: the rank is the sum). Slots come in rank
classes (`rank_classes`); each class has a bank per group of same-shaped layers.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .rank_classes import SlotLayout
from .routing import SlotRouting, route
from .slots import GatheredLora, SlotBank, SlottedLinear, gathered_lora

PEFT_PREFIX = "base_model.model."
# A batch's slots: a routing built once per membership, or each row's slot (host values).
Slots = SlotRouting | Sequence[int] | torch.Tensor


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

    @staticmethod
    def stack_rank(parts: Sequence[LoraWeights]) -> int:
        """The rank `stack` of these parts would have, without building it."""
        names = set().union(*(p.modules for p in parts))
        return max(sum(p.modules[n][0].shape[0] for p in parts if n in p.modules) for n in names)


class PackedLoraModel(nn.Module):
    def __init__(
        self,
        base: nn.Module,
        targets: Sequence[str],
        slots: int | SlotLayout,
        max_rank: int | None = None,
        gathered: GatheredLora = gathered_lora,
    ) -> None:
        """`slots`: a layout of rank classes, or a slot count (counting slot 0) for one
        class of rank `max_rank`. `gathered`: the per-class computation (a fused kernel
        may replace the index_select + bmm one)."""
        super().__init__()
        if isinstance(slots, int):
            if max_rank is None:
                raise ValueError("give max_rank with a slot count, or a SlotLayout")
            slots = SlotLayout.uniform(slots, max_rank)
        self.base, self.layout = base, slots
        self.cache_keyword = cache_keyword(base.forward)
        self.layers: dict[str, SlottedLinear] = {}
        self.banks: list[tuple[SlotBank, list[str]]] = []  # per same-shaped layers and class
        self._groups: list[tuple[list[SlotBank], list[str]]] = []  # a bank per class
        for (in_f, out_f, dtype, device), members in _same_shaped(base, targets).items():
            names = [name for name, _ in members]
            banks = [
                SlotBank(len(members), in_f, out_f, c.slots + 1, c.rank, dtype, device)
                for c in self.layout.classes
            ]
            self._groups.append((banks, names))
            self.banks += [(bank, names) for bank in banks]
            for i, (name, module) in enumerate(members):
                wrapped = SlottedLinear(module, [bank.layer(i) for bank in banks], gathered)
                parent_name, _, leaf = name.rpartition(".")
                setattr(base.get_submodule(parent_name), leaf, wrapped)
                self.layers[name] = wrapped

    def slot_bytes(self, rank_class: int) -> int:
        """What one slot of the class takes on the device (A and B of every layer)."""
        return sum(banks[rank_class].slot_bytes for banks, _ in self._groups)

    @torch.no_grad()
    def load(self, slot: int, weights: LoraWeights) -> None:
        unknown = set(weights.modules) - set(self.layers)
        if unknown:
            raise ValueError(f"adapter wraps modules the base does not have: {sorted(unknown)}")
        index, local = self.layout.locate(slot)
        for banks, names in self._groups:
            parts = [weights.modules[n] for n in names if n in weights.modules]
            if parts and banks[index].load(local, parts):
                continue
            self._load_each(index, local, weights, names)

    def _load_each(self, index: int, local: int, weights: LoraWeights, names: list[str]) -> None:
        for name in names:
            bank = self.layers[name].bank(index)
            if name in weights.modules:
                a, b, scale = weights.modules[name]
                bank.copy_in(local, a, b, scale)
            else:
                bank.clear(local)

    def clear(self, slot: int) -> None:
        index, local = self.layout.locate(slot)
        for layer in self.layers.values():
            layer.bank(index).clear(local)

    def slot_weights(self, name: str, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The A [r, in] and B [out, r] that layer `name` holds in `slot` (views; r: the
        slot's class's rank)."""
        index, local = self.layout.locate(slot)
        bank = self.layers[name].bank(index)
        return bank.A[local], bank.B[local]

    def route(self, slots: Sequence[int] | torch.Tensor) -> SlotRouting:
        """The routing of a batch whose row i uses `slots[i]` (0: none). Build it once per
        batch membership: a tensor on the device is read back here."""
        ids = slots.tolist() if isinstance(slots, torch.Tensor) else list(slots)
        return route(self.layout, ids, self.device)

    def forward(self, input_ids: torch.Tensor, slot_ids: Slots) -> torch.Tensor:
        """Logits for a batch where sample i uses adapter slot slot_ids[i] (0: none)."""
        logits: torch.Tensor = self.run(input_ids, slot_ids).logits
        return logits

    def run(
        self, input_ids: torch.Tensor, slot_ids: Slots, cache: Any = None, **kwargs: Any
    ) -> Any:
        """The base model's full output (pass cache / use_cache for decoding)."""
        if cache is not None:
            kwargs[self.cache_keyword] = cache
        with self.adapters(slot_ids):
            return self.base(input_ids, **kwargs)

    @property
    def device(self) -> torch.device:
        """Where the slot banks (and the base's wrapped layers) are."""
        return self.banks[0][0].A.device

    @property
    def dtype(self) -> torch.dtype:
        return self.banks[0][0].A.dtype

    @contextlib.contextmanager
    def adapters(self, slot_ids: Slots) -> Iterator[None]:
        """Within the block, every forward pass of the base applies sample i's slot."""
        routing = slot_ids if isinstance(slot_ids, SlotRouting) else self.route(slot_ids)
        for layer in self.layers.values():
            layer.routing = routing
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.routing = None


def _same_shaped(
    base: nn.Module, targets: Sequence[str]
) -> dict[tuple[Any, ...], list[tuple[str, nn.Linear]]]:
    """The target linear layers by (in, out, dtype, device): each group shares banks."""
    shapes: dict[tuple[Any, ...], list[tuple[str, nn.Linear]]] = {}
    for name, module in list(base.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            w = module.weight
            key = (module.in_features, module.out_features, w.dtype, w.device)
            shapes.setdefault(key, []).append((name, module))
    if not shapes:
        raise ValueError(f"no linear layers named {list(targets)} in the base model")
    return shapes


def cache_keyword(forward: Callable[..., Any]) -> str:
    """What a transformers model's forward calls its KV cache: `cache` since transformers
    renamed it (5.2x, the old name deprecated), `past_key_values` before (the GPU machine
    had 5.17). Passed under the other name, a cache would be swallowed by `**kwargs`."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
