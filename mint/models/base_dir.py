"""What a base model directory must hold, checked without torch (a node checks it before
importing torch, so a wrong --base-dir costs a second, not the imports)."""

from __future__ import annotations

import os
from pathlib import Path

from mint.domain.errors import FailedPrecondition


def check_base_dir(path: str, *, tokenizer: bool = True) -> None:
    """Raise FailedPrecondition saying what a base directory lacks (the folder itself,
    read access, config.json, safetensors weights, tokenizer.json), before transformers
    meets it with an error about something else (a missing tokenizer.json makes it try
    to convert a sentencepiece model)."""
    folder = Path(path)
    if not folder.is_dir():
        state = "is not a directory" if folder.exists() else "does not exist"
        raise FailedPrecondition(f"base directory {folder} {state}")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise FailedPrecondition(f"base directory {folder} is not readable by this process")
    wanted = {"config.json": "the model's config (save_pretrained writes it)"}
    if tokenizer:
        wanted["tokenizer.json"] = "the tokenizer (tokenizer.save_pretrained writes it)"
    for name, what in wanted.items():
        file = folder / name
        if not file.is_file():
            raise FailedPrecondition(f"base directory {folder} has no {name}: {what}")
        if not os.access(file, os.R_OK):
            raise FailedPrecondition(f"{file} is not readable by this process")
    if not any(folder.glob("*.safetensors")):
        raise FailedPrecondition(
            f"base directory {folder} has no *.safetensors weights (only safetensors are "
            "loaded, never pickle)"
        )
