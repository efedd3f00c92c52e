"""A strict reader of the safetensors format, from bytes.

Layout: 8-byte little-endian header length N, N bytes of JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
tensor data. The JSON is read as strictly as the reference library reads it (anything it
refuses is refused here), and more: no key twice, no fields beyond an entry's three. The
library checks structure only; names, dtypes, shapes and values (NaN/Inf) are checked here.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

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
_FLOAT_VIEW = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
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
    header, header_len = _parse_or_name_format(data, limits)
    _check_metadata(header.pop("__metadata__", None))
    if len(header) > limits.max_tensors:
        raise InvalidArgument(f"{len(header)} tensors; the limit is {limits.max_tensors}")
    tensors = {name: _tensor_info(name, spec, limits) for name, spec in header.items()}
    _check_layout(tensors, len(data) - 8 - header_len)
    return tensors, 8 + header_len


class _NotSafetensors(InvalidArgument):
    """The bytes do not frame a JSON object: the one failure that may mean another format."""


def _parse_or_name_format(data: bytes, limits: Limits) -> tuple[dict[str, Any], int]:
    """The header object and its length. The first bytes of a safetensors file are the low
    bytes of its header length, so they can be 0x80 or spell "PK" too: a file is judged by
    parsing it, and named a pickle or zip (torch.save) only when that fails."""
    try:
        header_len = _header_length(data, limits)
        return _json_object(data[8 : 8 + header_len]), header_len
    except _NotSafetensors:
        if _PICKLE.match(data) or data.startswith(_ZIP):
            raise InvalidArgument(
                "weights are not safetensors: they look like a pickle or torch.save file, "
                "which MinT never loads; upload adapter_model.safetensors"
            ) from None
        raise


_PICKLE = re.compile(rb"\x80[\x02-\x05]")  # the PROTO opcode that opens pickles since 2
_ZIP = b"PK\x03\x04"  # a zip's first local file header (torch.save writes a zip)


def _header_length(data: bytes, limits: Limits) -> int:
    if len(data) < 8:
        raise _NotSafetensors("weights are not safetensors: shorter than the 8-byte header size")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > limits.max_header_bytes:
        raise _NotSafetensors(
            f"safetensors header declares {header_len:,} bytes; the limit is "
            f"{limits.max_header_bytes:,}"
        )
    if 8 + header_len > len(data):
        raise _NotSafetensors("weights are truncated: the safetensors header runs past the end")
    return int(header_len)


def _json_object(raw: bytes) -> dict[str, Any]:
    """JSON as strict as the reference reader's (serde_json): UTF-8 only (Python's json
    would also guess UTF-16), no key twice in one object, "-0" is no integer."""
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_dict_of_unique, parse_int=_json_int
        )
    except RecursionError:
        raise InvalidArgument("safetensors header is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):  # ValueError: also an int of 4,300+ digits
        raise _NotSafetensors(_NOT_JSON) from None
    if not isinstance(header, dict):
        raise _NotSafetensors(_NOT_JSON)
    return header


_NOT_JSON = (
    "weights are not safetensors (the header is not a JSON object); only safetensors is "
    "accepted, never pickle"
)


def _json_int(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)  # serde_json reads "-0" as a float


def _dict_of_unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key twice in one object is refused anywhere in the header: readers disagree on which
    entry wins, and the shadowed one would never be checked."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(
                f"safetensors header has the key {key!r} more than once; each tensor and "
                "field may appear only once: save the weights again with safetensors"
            )
        _check_text(key)
        result[key] = value
    return result


def _check_text(text: str) -> None:
    """JSON's \\u escapes can spell half a surrogate pair, which is no Unicode text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"safetensors header has a string with an unpaired surrogate escape: {text!r}"
        ) from None


def _check_metadata(metadata: object) -> None:
    if metadata is None:  # absent, or null as the reference reader allows
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidArgument("safetensors __metadata__ must map strings to strings")
    for value in metadata.values():
        _check_text(value)


_ENTRY_FIELDS = {"dtype", "shape", "data_offsets"}


def _tensor_info(name: str, spec: object, limits: Limits) -> TensorInfo:
    if not isinstance(spec, dict) or not spec.keys() >= _ENTRY_FIELDS:
        raise InvalidArgument(f"tensor {name!r}: entry lacks dtype, shape or data_offsets")
    if spec.keys() != _ENTRY_FIELDS:  # writers add none; the reference reader skips them
        raise InvalidArgument(
            f"tensor {name!r}: unknown fields {sorted(spec.keys() - _ENTRY_FIELDS)}; an entry "
            "holds only dtype, shape and data_offsets"
        )
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in limits.dtypes:
        raise InvalidArgument(
            f"tensor {name!r} has dtype {dtype!r}; allowed: {sorted(limits.dtypes)}"
        )
    if not (isinstance(shape, list) and all(_is_size(d) for d in shape)):
        raise InvalidArgument(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_size(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise InvalidArgument(f"tensor {name!r}: bad data_offsets {offsets!r}")
    if (offsets[1] - offsets[0]) != _byte_size(name, shape, dtype):
        raise InvalidArgument(f"tensor {name!r}: data_offsets do not match shape and dtype")
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _is_size(value: object) -> bool:
    return type(value) is int and value >= 0  # not a bool, a float or a -0 (see _json_int)


def _byte_size(name: str, shape: list[int], dtype: str) -> int:
    """Elements times item size, refused where a 64-bit count overflows on the way (as the
    reference reader does, even if a later dimension is 0)."""
    count = 1
    for size in [*shape, ITEM_SIZE[dtype] * 8]:  # the reference reader counts bits
        count *= size
        if count >= 2**64:
            raise InvalidArgument(f"tensor {name!r}: shape {shape} overflows 64 bits")
    return count // 8


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
