"""Upload limits, in one place; services may pass stricter ones."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_weights_bytes: int = 256 * MiB
    max_header_bytes: int = 1 * MiB
    max_tensors: int = 4096
    max_config_bytes: int = 64 * 1024
    max_rank: int = 512
    dtypes: frozenset[str] = frozenset({"F32", "F16", "BF16"})
