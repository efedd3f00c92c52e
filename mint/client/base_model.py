"""A base model's fingerprint and parameter shapes from a local model folder, for
`register_base`: what an inference node started with `--base-dir` on that folder computes.

Loading a model needs torch, transformers and safetensors (`mint[serving]`), which the
bare client install leaves out; they are imported only when this is called.
"""

from __future__ import annotations

from pathlib import Path

from .types import BaseModel


class MissingExtra(ImportError):
    """A feature needs packages of an extra that is not installed (the message says which)."""


def describe_base(directory: str | Path, name: str | None = None) -> BaseModel:
    """The base in `directory` (a transformers causal-LM folder: config.json and
    safetensors weights), named `name` (default: the folder's name)."""
    try:
        from mint.models.base import fingerprint, load_base_dir
    except ImportError as exc:
        raise MissingExtra(
            f"describing a base model loads it with torch and transformers ({exc}): "
            "pip install 'mint[serving]'"
        ) from exc
    folder = Path(directory)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{folder} holds no model: pass a folder with config.json and *.safetensors "
            "weights (what save_pretrained writes)"
        )
    model = load_base_dir(str(folder))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return BaseModel(name or folder.resolve().name, fingerprint(model), shapes)
