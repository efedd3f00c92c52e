"""Launching the gathered LoRA delta's two Triton kernels: shrink (x·Aᵀ → float32
partial sums [split, rows, R]) then expand (Σ partials · Bᵀ · scale, added into y).

Two kernels, as Punica's BGMV/SGMV and vLLM's LoRA ops, rather than one fused: the shrink
reduces the long `in` dimension to a rank of 1 to 64, so its parallelism comes from splitting
`in` (split-K); the expand fans a rank-R vector out over the long `out` dimension, so its
parallelism comes from tiling `out`. Fused, every `out` tile would re-read x and A[slot]
(or one program would own a whole row: 32 programs on 132 SMs at batch 32). The split-K
partials are summed by the expand instead of atomically added, so there is no buffer to
zero and the result does not depend on timing. Shapes alone decide the launch (no host
sync), so the pair can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

from mint.serving.kernels.bgmv_kernels import expand_kernel, shrink_kernel

# TRITON_INTERPRET=1 when the kernels were defined: they run on CPU tensors, in NumPy.
INTERPRETED = isinstance(shrink_kernel, InterpretedFunction)

# ~4 programs per SM on an H100/H200 (132 SMs): enough in flight to hide memory latency.
TARGET_PROGRAMS = 512
# float32 elements of a decode program's weight tile ([R, K] or [N, R]): 32 per thread.
DECODE_TILE = 4096


@dataclass(frozen=True)
class Tiling:
    block_m: int  # tokens per program: 1 for decode (matrix-vector), else a tl.dot tile
    block_r: int  # the rank padded to a power of two (at least 16 for tl.dot, else 4)
    block_k: int  # shrink: `in` elements per step
    block_n: int  # expand: `out` elements per program
    split_k: int  # shrink programs per row tile, each summing every split_k-th K block


@functools.lru_cache(maxsize=1024)
def tiling(batch: int, seq: int, in_features: int, out_features: int, rank: int) -> Tiling:
    if seq == 1:
        block_m, block_r = 1, max(4, triton.next_power_of_2(rank))
        block_k = block_n = min(256, max(32, DECODE_TILE // block_r))
    else:
        block_m = min(64, max(16, triton.next_power_of_2(seq)))
        block_r = max(16, triton.next_power_of_2(rank))
        # the expand's float32 dot [M, R]·[R, N]: a large rank gets narrower tiles (no spills)
        block_k, block_n = 64, min(64, 1024 // block_r)
    block_k = min(block_k, max(16, triton.next_power_of_2(in_features)))
    block_n = min(block_n, max(16, triton.next_power_of_2(out_features)))
    row_tiles = batch * triton.cdiv(seq, block_m)
    wanted = min(triton.cdiv(in_features, block_k), max(1, TARGET_PROGRAMS // row_tiles))
    if seq > 1:  # each expand program re-reads its tile's partials: keep them small beside y
        wanted = min(wanted, max(1, block_n // (2 * block_r)))
    split_k = 1 << (wanted.bit_length() - 1)  # a power of two: few compiled variants
    return Tiling(block_m, block_r, block_k, block_n, split_k)


@dataclass(frozen=True)
class Launch:
    """One kernel launch: its grid, arguments and compile-time constants."""

    kernel: Any
    grid: tuple[int, int, int]
    args: tuple[Any, ...]
    constants: dict[str, Any]

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.constants)


def bgmv_delta(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """out += scale[s]·B[s]·A[s]·x for each row, s = its slot (0: left as it is), computed
    in float32 and rounded once into out's dtype; returns out. x [rows, in] with slot_ids
    [rows], or [batch, seq, in] with slot_ids [batch]; out x's shape with `out` features.
    Operands as `lora_delta` checks them (this launches without checking)."""
    if x.numel() == 0 or A.shape[1] == 0:
        return out
    for launch in launches(x, A, B, scale, slot_ids, out):
        launch()
    return out


def launches(
    x: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    scale: torch.Tensor,
    slot_ids: torch.Tensor,
    out: torch.Tensor,
) -> tuple[Launch, Launch]:
    """The shrink and the expand for `bgmv_delta`'s operands (a rank of at least 1)."""
    batch, seq = x.shape[0], x.shape[1] if x.dim() == 3 else 1
    rank, in_features, out_features = A.shape[1], A.shape[2], B.shape[1]
    t = tiling(batch, seq, in_features, out_features, rank)
    partial = torch.empty(t.split_k, batch * seq, rank, dtype=torch.float32, device=x.device)
    row_tiles = triton.cdiv(seq, t.block_m)
    ids = (slot_ids, slot_ids.stride(0), seq)
    expand_strides = (partial.stride(0), scale.stride(0), *B.stride(), *_strides(out))
    shrink = Launch(
        shrink_kernel,
        (t.split_k, row_tiles, batch),
        (x, A, partial, *ids, in_features, rank, *_strides(x), *A.stride(), partial.stride(0)),
        {
            "BLOCK_M": t.block_m,
            "BLOCK_R": t.block_r,
            "BLOCK_K": t.block_k,
            "SPLIT_K": t.split_k,
            # float32 stays float32 (torch's default for matmuls), not TF32; 16-bit ignores it
            "INPUT_PRECISION": "ieee" if x.dtype == torch.float32 else "tf32",
            # Triton 3.9's interpreter multiplies bfloat16 as integers (its storage type);
            # products of bfloat16 values are exact in float32, so upcasting computes the same
            "UPCAST_DOT": INTERPRETED and x.dtype == torch.bfloat16,
        },
    )
    expand = Launch(
        expand_kernel,
        (triton.cdiv(out_features, t.block_n), row_tiles, batch),
        (partial, B, scale, out, *ids, out_features, rank, *expand_strides),
        {"BLOCK_M": t.block_m, "BLOCK_N": t.block_n, "BLOCK_R": t.block_r, "SPLIT_K": t.split_k},
    )
    return shrink, expand


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, seq, feature) strides of a [batch, seq, f] or [rows, f] tensor."""
    if t.dim() == 3:
        return t.stride(0), t.stride(1), t.stride(2)
    return t.stride(0), 0, t.stride(1)
