"""Where a node's tensors live and in which dtype, and how slot writes reach them.

`resolve(device, dtype)` turns the node's settings into a torch device and dtype (auto:
the first CUDA device in bfloat16 when torch sees one, else the CPU in float32), and
refuses what cannot run with a message saying what to pass instead.

On CUDA, adapter weights wait in pinned host memory and slot writes are asynchronous
copies on a stream of their own (`SlotWrites`), so a load never waits behind a running
forward pass; the write is complete before the slot is handed to any request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

DEVICES = "auto, cpu, cuda or cuda:N"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class TensorHome:
    """The device and dtype of the base, the slot banks and everything else resident."""

    device: torch.device
    dtype: torch.dtype

    @property
    def pins(self) -> bool:
        """Whether host copies are pinned (page-locked): only worth it, and only possible,
        for copies to a CUDA device."""
        return self.device.type == "cuda"

    def describe(self) -> tuple[str, str]:
        """(device, dtype) as the settings spell them: ("cuda:0", "bfloat16")."""
        return str(self.device), dtype_name(self.dtype)


def dtype_name(dtype: torch.dtype) -> str:
    """As the settings spell it: "bfloat16" for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


def resolve(device: str = "auto", dtype: str = "auto") -> TensorHome:
    """The node's device and dtype; ValueError saying what to pass instead if they cannot
    run here."""
    where = resolve_device(device)
    home = TensorHome(where, resolve_dtype(dtype, where))
    _probe(home)
    return home


def resolve_device(spec: str) -> torch.device:
    if not _DEVICE.fullmatch(spec):
        raise ValueError(f"device {spec!r} is not one of {DEVICES}: fix --device or MINT_DEVICE")
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU build)"
        raise ValueError(
            f"device {spec} asked for, but torch sees no CUDA device here (this torch has "
            f"{build}; check the GPU and its driver are visible to this process): pass "
            "--device cpu, or --device auto to use a GPU only when there is one"
        )
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {spec} asked for, but torch sees {count} CUDA device(s), "
            f"cuda:0..cuda:{count - 1}: pass one of those"
        )
    return torch.device("cuda", index)


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if spec not in DTYPES:
        raise ValueError(
            f"dtype {spec!r} is not one of auto, {', '.join(DTYPES)}: fix --dtype or MINT_DTYPE"
        )
    chosen = DTYPES[spec]
    bf16_missing = device.type == "cuda" and not torch.cuda.is_bf16_supported(False)
    if chosen == torch.bfloat16 and bf16_missing:
        raise ValueError(
            f"{torch.cuda.get_device_name(device)} has no bfloat16 arithmetic: "
            "pass --dtype float16 (or float32)"
        )
    return chosen


def _probe(home: TensorHome) -> None:
    """Run, on a few numbers, the operations serving uses (embedding gather, batched
    matrix products, softmax), so a dtype the device cannot compute in fails now."""
    try:
        x = torch.ones(2, 3, 4, dtype=home.dtype, device=home.device)
        picked = x.index_select(0, torch.tensor([1, 0], device=home.device))
        torch.softmax(torch.bmm(picked, x.transpose(1, 2)).float(), dim=-1)
        torch.nn.functional.linear(x, x[0])
    except RuntimeError as exc:
        device, dtype = home.describe()
        raise ValueError(
            f"this torch cannot serve in {dtype} on {device} ({exc}): pass --dtype float32"
        ) from exc


class SlotWrites:
    """Orders every write into the slot banks (loads and clears) and completes it before
    the caller goes on. On CUDA the writes run on a stream of their own, so they need not
    wait for a forward pass running on the default stream; a slot being written is never
    one a running batch reads (the slot table hands it out only afterwards)."""

    def __init__(self, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if cuda else None  # type: ignore[no-untyped-call]

    @contextmanager
    def ordered(self) -> Iterator[None]:
        if self.stream is None:
            yield
            return
        with torch.cuda.stream(self.stream):
            yield
        self.stream.synchronize()
