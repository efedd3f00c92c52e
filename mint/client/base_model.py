"""A base model's fingerprint and parameter shapes from a local model folder, for
`register_base`: what an inference node started with `--base-dir` on that folder computes.
Read from the files (config.json and the safetensors headers and bytes): no torch needed.
"""

from __future__ import annotations

from pathlib import Path

from mint.domain.errors import FailedPrecondition
from mint.models.base_files import describe_base_dir

from .types import BaseModel


class MissingExtra(ImportError):
    """A feature needs packages of an extra that is not installed (the message says which)."""


def describe_base(directory: str | Path, name: str | None = None) -> BaseModel:
    """The base in `directory` (a transformers causal-LM folder: config.json and
    safetensors weights), named `name` (default: the folder's name)."""
    folder = Path(directory)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{folder} holds no model: pass a folder with config.json and *.safetensors "
            "weights (what save_pretrained writes)"
        )
    try:
        stored = describe_base_dir(folder)
    except FailedPrecondition as exc:
        raise ValueError(str(exc)) from None
    return BaseModel(name or folder.resolve().name, stored.fingerprint, stored.shapes)
