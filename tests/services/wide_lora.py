"""A wide base and large valid LoRA uploads for it (24 MiB each), and a registry process
to send them to, for the tests of the registry's memory under concurrent transfers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import safetensors.numpy

from deploy.local.registry import RegistryProcess, write_tokens
from deploy.local.stack import free_ports

RANK, WIDTH, MODULES = 512, 2048, 3  # each module's lora_A + lora_B: 8 MiB of F32


def memory(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak so far), in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024  # "123456 kB"
    return fields


def wide_base() -> dict[str, tuple[int, int]]:
    return {f"model.layers.{i}.proj.weight": (WIDTH, WIDTH) for i in range(MODULES)}


def lora_weights(fill: float) -> bytes:
    """A valid rank-512 LoRA for `wide_base`; `fill` makes each upload's bytes its own."""
    tensors = {}
    for i in range(MODULES):
        prefix = f"base_model.model.model.layers.{i}.proj"
        tensors[f"{prefix}.lora_A.weight"] = np.full((RANK, WIDTH), fill, np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.zeros((WIDTH, RANK), np.float32)
    return safetensors.numpy.save(tensors)


CONFIG = json.dumps(
    {"peft_type": "LORA", "r": RANK, "lora_alpha": 16.0, "target_modules": ["proj"]}
).encode()


def registry_process(
    tmp_path: Path, endpoints: dict[str, str], flags: list[str]
) -> RegistryProcess:
    """A registry on a topic of its own, with /metrics, for the tokens "admin" (every
    tenant) and "alice" (tenant acme); not started."""
    tokens = write_tokens(
        tmp_path / "tokens.json",
        {
            "admin": {"principal": "ops", "tenants": ["*"], "admin": True},
            "alice": {"principal": "alice", "tenants": ["acme"]},
        },
    )
    port, metrics_port = free_ports(2)
    topic = f"transfers-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "registry.log"
    return RegistryProcess(
        port, topic, tokens, log, endpoints, 2, extra_args=flags, metrics_port=metrics_port
    )
