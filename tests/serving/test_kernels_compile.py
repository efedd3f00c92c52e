"""The gathered-LoRA kernels compile for the GPU the project is measured on (an H200:
sm_90), ahead of time on this CPU machine with the ptxas Triton bundles: every variant the
GPU check (bench/gpu/lora_kernel.py) launches, and prefill tiles, so a GPU session does not
spend its minutes on a kernel that does not compile. The interpreter (test_kernels.py)
checks what they compute; this checks what Triton makes of them for the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bench.gpu.lora_kernel import CONFIGS, TINYLLAMA, Shape
from mint.serving.kernels.bgmv import Launch, launches

HOPPER = GPUTarget("cuda", 90, 32)
TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
TRITON_TYPES[torch.int64] = "i64"


def meta_operands(
    dtype: torch.dtype, batch: int, seq: int | None, fan_in: int, fan_out: int, rank: int
) -> tuple[torch.Tensor, ...]:
    """(x, A, B, scale, slot_ids, out) with shapes and dtypes only (no memory)."""

    def shaped(*size: int) -> torch.Tensor:
        return torch.empty(*size, device="meta", dtype=dtype)

    rows = (batch,) if seq is None else (batch, seq)
    slots = batch + 1
    return (
        shaped(*rows, fan_in),
        shaped(slots, rank, fan_in),
        shaped(slots, fan_out, rank),
        shaped(slots),
        torch.empty(batch, dtype=torch.long, device="meta"),
        shaped(*rows, fan_out),
    )


def gpu_check_variants() -> list[tuple[torch.Tensor, ...]]:
    """The decode deltas the GPU check times: TinyLlama 1.1B, bfloat16, batch 32 and 128."""
    shape = Shape(**TINYLLAMA)
    return [
        meta_operands(torch.bfloat16, batch, None, *shape.features(target), rank)
        for rank, targets in CONFIGS.values()
        for target in targets
        for batch in (32, 128)
    ]


PREFILL = [  # tl.dot tiles: bfloat16 on tensor cores, float32 and float16, ranks 1 to 64
    meta_operands(torch.bfloat16, 4, 64, 2048, 5632, 16),
    meta_operands(torch.float32, 2, 100, 2048, 256, 64),
    meta_operands(torch.float16, 3, 17, 2048, 256, 1),
]


def signature(launch: Launch) -> tuple[dict[str, str], dict[tuple[int, ...], Any]]:
    """Triton's types for the launch's arguments (integers as i32), and its constants."""
    kernel = launch.kernel
    given = dict(zip(kernel.arg_names, launch.args, strict=False))
    types: dict[str, str] = {}
    for name in kernel.arg_names:
        value = given.get(name)
        if name in launch.constants:
            types[name] = "constexpr"
        elif isinstance(value, torch.Tensor):
            types[name] = "*" + TRITON_TYPES[value.dtype]
        else:
            types[name] = "i32"
    constants: dict[tuple[int, ...], Any] = {
        (kernel.arg_names.index(k),): v for k, v in launch.constants.items()
    }
    return types, constants


def compile_for_hopper(launch: Launch) -> Any:
    types, constants = signature(launch)
    return triton.compile(ASTSource(launch.kernel, types, constants), target=HOPPER)


def test_every_variant_compiles_for_an_h200(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compiled here, not found cached
    variants: dict[str, Launch] = {}
    for operands in [*gpu_check_variants(), *PREFILL]:
        for launch in launches(*operands):
            types, _ = signature(launch)
            variants[repr((launch.kernel.fn.__name__, types, launch.constants))] = launch
    assert len(variants) >= 8  # decode tilings differ by rank, split and shape
    for launch in variants.values():
        assert compile_for_hopper(launch).asm["cubin"], launch.constants
    bf16_prefill_shrink = launches(*PREFILL[0])[0]
    assert "mma" in compile_for_hopper(bf16_prefill_shrink).asm["ptx"], "no tensor cores"
