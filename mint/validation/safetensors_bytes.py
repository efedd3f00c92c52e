"""A strict reader of the safetensors format, from bytes.

Layout: 8-byte little-endian header length N, N bytes of JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
tensor data. The reference library checks structure only; names, dtypes, shapes and
values (NaN/Inf) are checked here too.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from mint.domain.errors import InvalidArgument, ResourceExhausted

from .limits import Limits

ITEM_SIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOAT_VIEW = {"F32": np.float32, "F16": np.float16}
FINITE_WINDOW_BYTES = 1024 * 1024  # a multiple of every item size


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section
    end: int


def read_header(data: bytes, limits: Limits) -> tuple[dict[str, TensorInfo], int]:
    """Tensor infos and where the data section starts; InvalidArgument for anything off."""
    if len(data) > limits.max_weights_bytes:
        raise ResourceExhausted(
            f"weights are {len(data):,} bytes; the limit is {limits.max_weights_bytes:,}"
        )
    if len(data) < 8:
        raise InvalidArgument("weights are not safetensors: shorter than the 8-byte header size")
    if data[:1] == b"\x80" or data[:2] == b"PK":  # pickle protocol 2+ / torch.save zip
        raise InvalidArgument(
            "weights are not safetensors: they look like a pickle or torch.save file, which "
            "MinT never loads; upload adapter_model.safetensors"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > limits.max_header_bytes:
        raise InvalidArgument(
            f"safetensors header declares {header_len:,} bytes; the limit is "
            f"{limits.max_header_bytes:,}"
        )
    if 8 + header_len > len(data):
        raise InvalidArgument("weights are truncated: the safetensors header runs past the end")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except RecursionError:
        raise InvalidArgument("safetensors header is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidArgument(
            "weights are not safetensors (the header is not JSON); only safetensors is "
            "accepted, never pickle"
        ) from None
    if not isinstance(header, dict):
        raise InvalidArgument("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidArgument("safetensors __metadata__ must map strings to strings")
    if len(header) > limits.max_tensors:
        raise InvalidArgument(f"{len(header)} tensors; the limit is {limits.max_tensors}")
    tensors = {name: _tensor_info(name, spec, limits) for name, spec in header.items()}
    _check_layout(tensors, len(data) - 8 - header_len)
    return tensors, 8 + header_len


def _tensor_info(name: str, spec: object, limits: Limits) -> TensorInfo:
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise InvalidArgument(f"tensor {name!r}: entry lacks dtype, shape or data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in limits.dtypes:
        raise InvalidArgument(
            f"tensor {name!r} has dtype {dtype!r}; allowed: {sorted(limits.dtypes)}"
        )
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise InvalidArgument(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(o) is int for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise InvalidArgument(f"tensor {name!r}: bad data_offsets {offsets!r}")
    if (offsets[1] - offsets[0]) != math.prod(shape) * ITEM_SIZE[dtype]:
        raise InvalidArgument(f"tensor {name!r}: data_offsets do not match shape and dtype")
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(tensors: dict[str, TensorInfo], data_size: int) -> None:
    """Tensors must tile the data section exactly: no gaps, overlaps or trailing bytes."""
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            raise InvalidArgument(f"tensor {info.name!r} overlaps another or leaves a gap")
        cursor = info.end
    if cursor != data_size:
        raise InvalidArgument(
            f"weights are truncated or padded: tensors cover {cursor:,} bytes of a "
            f"{data_size:,}-byte data section"
        )


def check_finite(data: bytes, data_start: int, tensors: dict[str, TensorInfo]) -> None:
    """Reject NaN and Inf in any floating-point tensor. A window at a time, over a view of
    `data`: a large tensor is never copied or widened whole."""
    view = memoryview(data)
    for info in tensors.values():
        if info.dtype != "BF16" and info.dtype not in _FLOAT_VIEW:
            continue
        begin, end = data_start + info.begin, data_start + info.end
        for start in range(begin, end, FINITE_WINDOW_BYTES):
            window = view[start : min(start + FINITE_WINDOW_BYTES, end)]
            if not np.isfinite(_floats(window, info.dtype)).all():
                raise InvalidArgument(f"tensor {info.name!r} contains NaN or Inf values")


def _floats(raw: memoryview, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # numpy has no bfloat16: widen the bits to float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(_FLOAT_VIEW[dtype]).newbyteorder("<"))
