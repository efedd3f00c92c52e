"""The two Triton kernels of the gathered LoRA delta (launched by `bgmv.py`).

Rows are addressed as [batch, seq] (decode: seq 1) and every token of batch row b uses
slot `slot_ids[b]`; a program works on BLOCK_M tokens of one batch row, so it reads its
adapter once for all of them. Slot 0 (no adapter) returns at once in both kernels.

BLOCK_M == 1 (decode) is a matrix-vector product: a broadcast multiply and a sum, as
Punica's BGMV; larger BLOCK_M uses `tl.dot` (tensor cores for 16-bit inputs), as SGMV.
"""

import triton
import triton.language as tl


@triton.jit
def shrink_kernel(
    x_ptr,
    a_ptr,
    partial_ptr,
    slot_ptr,
    slot_stride,
    seq,
    in_features,
    rank,
    x_stride_b,
    x_stride_s,
    x_stride_k,
    a_stride_slot,
    a_stride_r,
    a_stride_k,
    partial_stride_split,
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    """partial[split, b·seq + m, :rank] = x[b, m] · A[slot]ᵀ over the K blocks of `split`
    (blocks split, split + SPLIT_K, …), in float32."""
    split = tl.program_id(0)
    m_tile = tl.program_id(1)
    b = tl.program_id(2)
    slot = tl.load(slot_ptr + b * slot_stride).to(tl.int64)
    if slot == 0:
        return
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    offs_k = split * BLOCK_K + tl.arange(0, BLOCK_K)
    x_rows = x_ptr + b * x_stride_b + offs_m[:, None] * x_stride_s
    a_rows = a_ptr + slot * a_stride_slot + offs_r[:, None] * a_stride_r
    row_ok = offs_m[:, None] < seq
    rank_ok = offs_r[:, None] < rank
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k in range(0, in_features, BLOCK_K * SPLIT_K):
        ks = k + offs_k
        k_ok = ks[None, :] < in_features
        x = tl.load(x_rows + ks[None, :] * x_stride_k, mask=row_ok & k_ok, other=0.0)
        a = tl.load(a_rows + ks[None, :] * a_stride_k, mask=rank_ok & k_ok, other=0.0)
        if BLOCK_M == 1:  # x [1, K] against a [R, K]
            acc += tl.sum(x.to(tl.float32) * a.to(tl.float32), axis=1)[None, :]
        elif UPCAST_DOT:  # the interpreter's dot multiplies bfloat16's raw bits
            acc = tl.dot(x.to(tl.float32), tl.trans(a.to(tl.float32)), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(a), acc, input_precision=INPUT_PRECISION)
    out = partial_ptr + split * partial_stride_split + (b * seq + offs_m[:, None]) * rank
    tl.store(out + offs_r[None, :], acc, mask=row_ok & (offs_r[None, :] < rank))


@triton.jit
def expand_kernel(
    partial_ptr,
    b_ptr,
    scale_ptr,
    y_ptr,
    slot_ptr,
    slot_stride,
    seq,
    out_features,
    rank,
    partial_stride_split,
    scale_stride,
    b_stride_slot,
    b_stride_n,
    b_stride_r,
    y_stride_b,
    y_stride_s,
    y_stride_n,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    """y[b, m, n-tile] += scale[slot] · (Σ_split partial[split, b·seq + m]) · B[slot, n-tile]ᵀ,
    in float32, rounded once into y's dtype."""
    n_tile = tl.program_id(0)
    m_tile = tl.program_id(1)
    b = tl.program_id(2)
    slot = tl.load(slot_ptr + b * slot_stride).to(tl.int64)
    if slot == 0:
        return
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    row_ok = offs_m[:, None] < seq
    rank_ok = offs_r[None, :] < rank
    parts = partial_ptr + (b * seq + offs_m[:, None]) * rank + offs_r[None, :]
    hidden = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for split in range(SPLIT_K):
        hidden += tl.load(parts + split * partial_stride_split, mask=row_ok & rank_ok, other=0.0)
    b_rows = b_ptr + slot * b_stride_slot + offs_n[:, None] * b_stride_n
    n_ok = offs_n[:, None] < out_features
    lora_b = tl.load(b_rows + offs_r[None, :] * b_stride_r, mask=n_ok & rank_ok, other=0.0)
    lora_b = lora_b.to(tl.float32)
    if BLOCK_M == 1:  # hidden [1, R] against B [N, R]
        delta = tl.sum(lora_b * hidden, axis=1)[None, :]
    else:
        delta = tl.dot(hidden, tl.trans(lora_b), input_precision="ieee")
    delta *= tl.load(scale_ptr + slot * scale_stride).to(tl.float32)
    y_tile = y_ptr + b * y_stride_b + offs_m[:, None] * y_stride_s + offs_n[None, :] * y_stride_n
    y_ok = row_ok & (offs_n[None, :] < out_features)
    y = tl.load(y_tile, mask=y_ok, other=0.0).to(tl.float32)
    tl.store(y_tile, (y + delta).to(y_ptr.dtype.element_ty), mask=y_ok)
