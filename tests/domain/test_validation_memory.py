"""Validating an upload needs little memory beyond the upload itself: the NaN/Inf check
looks at a window of a tensor at a time, so a large BF16 tensor is never copied or widened
whole (which once cost five times its size)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mint.domain.errors import InvalidArgument
from mint.validation.limits import Limits
from mint.validation.safetensors_bytes import check_finite, read_header

MiB = 1024 * 1024
ELEMENTS = 16 * MiB  # one BF16 tensor of 32 MiB
EXTRA_BOUND = 16 * MiB  # what the check may allocate on top of the upload


def bf16_file(last: float = 0.5) -> bytes:
    """A safetensors file of one BF16 tensor, all ones but its last value."""
    bits = np.full(ELEMENTS, 0x3F80, dtype="<u2")  # 1.0 in bfloat16
    bits[-1] = np.array([last], dtype="<f4").view("<u4")[0] >> 16
    header = f'{{"t":{{"dtype":"BF16","shape":[{ELEMENTS}],"data_offsets":[0,{bits.nbytes}]}}}}'
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw + bits.tobytes()


def test_the_finite_check_needs_little_memory_beyond_the_upload() -> None:
    data = bf16_file()
    tensors, start = read_header(data, Limits())
    tracemalloc.start()
    try:
        check_finite(data, start, tensors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= EXTRA_BOUND, f"checking a 32 MiB tensor allocated {peak / MiB:.0f} MiB"


def test_a_nan_in_the_last_window_is_still_found() -> None:
    data = bf16_file(last=float("nan"))
    tensors, start = read_header(data, Limits())
    with pytest.raises(InvalidArgument, match="NaN or Inf"):
        check_finite(data, start, tensors)
