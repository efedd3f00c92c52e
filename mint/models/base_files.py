"""A base model folder's fingerprint and parameter shapes, read from its files without
torch: what `mint base register DIR` sends from a bare client install, and what a node,
an evaluator or a trainer serving that folder computes.

The fingerprint is sha256 over the folder's config.json (less the keys that name the
library that wrote it) and then, in name order over every *.safetensors file, each
tensor's name, dtype, shape and stored bytes. It is of the files, so two folders holding
the same weights and config have the same one however the weights are sharded, and a
base built in code is fingerprinted by saving it (`mint.models.base.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mint.domain.errors import FailedPrecondition

from .base_dir import check_base_dir

# Keys that describe the library that wrote a config, not the model, or that
# save_pretrained fills in (the class name; the dtype, which each tensor's line covers).
VOLATILE_CONFIG_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "_commit_hash", "architectures"}
    | {"dtype", "torch_dtype"}
)
MAX_HEADER_BYTES = 100 * 1024**2  # the safetensors library's own limit
_CHUNK = 1024**2


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str  # as safetensors spells it: F32, BF16, ...
    shape: tuple[int, ...]
    file: Path
    start: int  # byte offsets in `file`
    end: int


@dataclass(frozen=True)
class StoredBase:
    fingerprint: str
    shapes: dict[str, tuple[int, ...]]


def describe_base_dir(path: str | Path) -> StoredBase:
    """The fingerprint and shapes of the base in `path` (config.json and safetensors
    weights; FailedPrecondition saying what is wrong with it otherwise)."""
    check_base_dir(str(path), tokenizer=False)
    folder = Path(path)
    tensors = stored_tensors(folder)
    digest = hashlib.sha256(config_text(folder / "config.json").encode())
    for tensor in tensors:
        digest.update(f"\n{tensor.name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        _hash_bytes(digest, tensor)
    return StoredBase(digest.hexdigest(), {t.name: t.shape for t in tensors})


def config_text(file: Path) -> str:
    """The config's canonical JSON: keys sorted, the library's own keys left out."""
    try:
        config = json.loads(file.read_text(), object_pairs_hook=_unique_keys(file))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"{file} is not a readable JSON config: {exc}") from None
    if not isinstance(config, dict):
        raise FailedPrecondition(f"{file} holds no JSON object (save_pretrained writes one)")
    kept = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    return json.dumps(kept, sort_keys=True)


def stored_tensors(folder: Path) -> list[StoredTensor]:
    """Every tensor of the folder's *.safetensors files, by name (a name in two files is
    refused: the folder would hold two models' weights)."""
    found: dict[str, StoredTensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for tensor in _file_tensors(file):
            if tensor.name in found:
                raise FailedPrecondition(
                    f"tensor {tensor.name} is in both {found[tensor.name].file.name} and "
                    f"{file.name}: keep one copy of the weights in {folder}"
                )
            found[tensor.name] = tensor
    return [found[name] for name in sorted(found)]


def _file_tensors(file: Path) -> list[StoredTensor]:
    size = file.stat().st_size
    with file.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8).ljust(8, b"\xff"))
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise FailedPrecondition(f"{file} is not a safetensors file (no header)")
        header = _json_object(file, stream.read(length))
    start = 8 + length
    tensors = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in spec["data_offsets"])
            tensor = StoredTensor(
                name, str(spec["dtype"]), tuple(int(d) for d in spec["shape"]), file,
                start + begin, start + end,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise FailedPrecondition(f"{file}: tensor {name} has no valid entry") from None
        if not start <= tensor.start <= tensor.end <= size:
            raise FailedPrecondition(f"{file}: tensor {name}'s bytes lie outside the file")
        tensors.append(tensor)
    return tensors


def _unique_keys(file: Path) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A key twice in one object is refused: readers disagree on which one wins, so the
    fingerprint would not say which weights or config it is of."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise FailedPrecondition(
                    f"{file} has the key {key!r} twice in one object: save it again"
                )
            result[key] = value
        return result

    return unique


def _json_object(file: Path, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys(file))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise FailedPrecondition(f"{file} is not a safetensors file (its header is no JSON)")
    return header


def _hash_bytes(digest: Any, tensor: StoredTensor) -> None:
    with tensor.file.open("rb") as stream:
        stream.seek(tensor.start)
        left = tensor.end - tensor.start
        while left:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                raise FailedPrecondition(f"{tensor.file} was cut short while being read")
            digest.update(chunk)
            left -= len(chunk)
