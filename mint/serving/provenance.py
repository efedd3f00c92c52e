"""Naming where a served output came from: its response id and the engine that made it.

Pure (no torch, no I/O), so the node, the audit command and clients read ids alike.
"""

from __future__ import annotations

import secrets
import time
import uuid

from mint.domain.errors import InvalidArgument


def new_response_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. Unique without
    coordination between nodes, and it says when it was made, so the audit finds its
    record near that time in the responses topic instead of reading the topic whole."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms & (2**48 - 1)) << 80 | secrets.randbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def response_time_ms(response_id: str) -> int:
    """When the response id was made (Unix milliseconds); InvalidArgument for what is
    not a response id."""
    try:
        parsed = uuid.UUID(response_id)
    except ValueError:
        raise InvalidArgument(
            f"{response_id!r} is not a response id (a UUID, as replies' provenance names it)"
        ) from None
    if parsed.version != 7:
        raise InvalidArgument(f"{response_id!r} is not a response id (a version-7 UUID)")
    return parsed.int >> 80


def engine_version(
    mint_version: str, torch_version: str, device: str, dtype: str, kernel: str
) -> str:
    """What decides an output's numbers besides the weights and the request: the code, the
    device and dtype it computed in, and the LoRA path (Triton kernel or torch)."""
    return f"mint {mint_version}; torch {torch_version}; {device} {dtype}; lora {kernel}"
