"""Building safetensors files for the reader's tests: with the library, at a chosen header
length, or with a hand-written header (duplicates, raw tokens) the library would not write."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch

# Header lengths whose low bytes look like another format's magic: pickle's PROTO opcode
# (0x80), and a zip's "PK" (0x4B50 little-endian). The library pads headers to 8 bytes,
# and both are multiples of 8.
LOOKS_LIKE_PICKLE = (0x80, 256)
LOOKS_LIKE_ZIP = (0x4B50, 65536)


def header_length(data: bytes) -> int:
    return int(struct.unpack("<Q", data[:8])[0])


def save_with_header_length(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    low: tuple[int, int] | None = None,
) -> bytes:
    """`safetensors.torch.save`, with a metadata entry padded so that the header length is
    congruent to low[0] modulo low[1]."""
    if low is None:
        return safetensors.torch.save(tensors, metadata)
    residue, modulus = low
    pad = 0
    for _ in range(2):  # the first save measures; the second lands on the residue
        data = safetensors.torch.save(tensors, {**(metadata or {}), "pad": " " * pad})
        pad += (residue - header_length(data)) % modulus
    if header_length(data) % modulus != residue:
        raise RuntimeError(f"header length {header_length(data)} missed {residue} mod {modulus}")
    return data


@dataclass(frozen=True)
class Raw:
    """JSON text written into a header as is (tokens json.dumps never writes, like -0)."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object as its list of members, so one key can appear twice."""

    items: tuple[tuple[str, object], ...]


def dump(value: object) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        value = Pairs(tuple(value.items()))
    if isinstance(value, Pairs):
        members = (f"{json.dumps(key)}:{dump(item)}" for key, item in value.items)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value)


def with_header(header: object, data_section: bytes) -> bytes:
    """A file with `header` (dumped as above, or bytes as they are) before `data_section`."""
    raw = header if isinstance(header, bytes) else dump(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data_section


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A library-written file's header object and data section."""
    end = 8 + header_length(data)
    return json.loads(data[8:end]), data[end:]
