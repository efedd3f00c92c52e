"""`lora_delta`: the gathered LoRA delta added into a layer's output, by the Triton kernels
on CUDA when Triton imports, else by the torch path (`slots.gathered_lora`: index_select
and bmm), which stays the CPU path and the reference the kernels are tested against."""

from __future__ import annotations

import functools
import importlib

import torch

from mint.serving.slots import gathered_lora

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def lora_delta(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """out += scale[s]·B[s]·A[s]·x for each row, s = its slot (slot 0: no adapter), in
    place; returns out. x [rows, in] with slot_ids [rows] (decode), or [batch, seq, in] with
    slot_ids [batch] (one slot per sample); A [slots, R, in], B [slots, out, R], scale
    [slots]; out x's shape with `out` features. Any R (a rank-grouped bank's). Slot ids
    must be below `slots`: checking them would wait for the device every call."""
    check_operands(x, A, B, scale, slot_ids, out)
    if kernel_applies(x, A, B):
        from mint.serving.kernels.bgmv import bgmv_delta

        return bgmv_delta(x, A, B, scale, slot_ids, out)
    return torch_delta(x, A, B, scale, slot_ids, out)


def gathered_lora_kernel(
    x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: torch.Tensor, slot_ids: torch.Tensor
) -> torch.Tensor:
    """`slots.GatheredLora` (the delta alone, x [rows, seq, in] → [rows, seq, out] in x's
    dtype) by the kernels where `lora_delta` would use them, else `slots.gathered_lora`:
    what `SlottedLinear(..., gathered=...)` takes. `lora_delta`, adding into the layer's
    output, saves this one's zeroed buffer and extra add."""
    if not kernel_applies(x, A, B):
        return gathered_lora(x, A, B, scale, slot_ids)
    out = x.new_zeros(*x.shape[:-1], B.shape[1])
    return lora_delta(x, A, B, scale, slot_ids, out)


def torch_delta(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """`lora_delta` by the torch path on any device (the delta in x's dtype, then added)."""
    samples = x if x.dim() == 3 else x.unsqueeze(1)
    delta = gathered_lora(samples, A, B, scale, slot_ids)
    out += delta.view(out.shape).to(out.dtype)
    return out


def kernel_applies(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> bool:
    """Whether `lora_delta` runs the Triton kernels: CUDA tensors, Triton importable, and
    no gradient wanted (the kernels have no backward; serving needs none)."""
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or A.requires_grad)
    return x.is_cuda and not wants_grad and not B.requires_grad and triton_imports()


def lora_path(setting: str, device: torch.device) -> str:
    """Which path a node's `--lora-kernel` setting computes its deltas by on `device`:
    "triton" or "torch" (they round differently, so outputs name it)."""
    return "triton" if setting == "auto" and device.type == "cuda" and triton_imports() else "torch"


@functools.cache
def triton_imports() -> bool:
    """Triton is imported only here, on first use: `mint` imports without it."""
    try:
        importlib.import_module("mint.serving.kernels.bgmv")
    except ImportError:
        return False
    return True


def check_operands(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> None:
    """ValueError naming what does not fit (the kernels would read out of bounds)."""
    if x.dim() not in (2, 3) or A.dim() != 3 or B.dim() != 3 or scale.dim() != 1:
        raise ValueError(
            f"lora_delta takes x [rows, in] or [batch, seq, in], A [slots, R, in], B [slots, "
            f"out, R], scale [slots]; got x {list(x.shape)}, A {list(A.shape)}, B {list(B.shape)}, "
            f"scale {list(scale.shape)}"
        )
    slots, rank, in_features = A.shape
    if B.shape[0] != slots or B.shape[2] != rank or scale.shape[0] != slots:
        raise ValueError(
            f"slot banks disagree: A {list(A.shape)}, B {list(B.shape)}, scale {list(scale.shape)} "
            "(want A [slots, R, in], B [slots, out, R], scale [slots])"
        )
    if x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} features, the slots' A takes {in_features}")
    if slot_ids.dim() != 1 or slot_ids.shape[0] != x.shape[0] or slot_ids.is_floating_point():
        raise ValueError(
            f"slot_ids must be integers, one per row of x ({x.shape[0]}); got "
            f"{slot_ids.dtype} {list(slot_ids.shape)}"
        )
    if out.shape != (*x.shape[:-1], B.shape[1]):
        raise ValueError(
            f"out is {list(out.shape)}, want {[*x.shape[:-1], B.shape[1]]} (x's rows, B's out)"
        )
    if not x.dtype == A.dtype == B.dtype or x.dtype not in KERNEL_DTYPES:
        raise ValueError(
            f"x, A and B must share one of float32, bfloat16, float16; got {x.dtype}, "
            f"{A.dtype}, {B.dtype} (place the slots in the model's dtype)"
        )
    devices = {t.device for t in (x, A, B, scale, slot_ids, out)}
    if len(devices) > 1:
        raise ValueError(
            f"operands are on {sorted(map(str, devices))}: move slot_ids and the slots to x's "
            "device"
        )
