"""A base folder's fingerprint and shapes read from its files (no torch on that path): equal
to the in-memory base's, whatever the sharding, and a refusal naming what is wrong."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedModel

from mint.domain.errors import FailedPrecondition
from mint.models.base import build_base, fingerprint, served_fingerprint, tiny_llama_config
from mint.models.base_files import describe_base_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def base() -> PreTrainedModel:
    return build_base(tiny_llama_config(), seed=4)


def _saved(model: PreTrainedModel, folder: Path, **options: Any) -> Path:
    model.save_pretrained(folder, **options)
    return folder


def test_the_folder_has_the_fingerprint_and_shapes_of_the_base_saved_there(
    base: PreTrainedModel, tmp_path: Path
) -> None:
    stored = describe_base_dir(_saved(base, tmp_path))
    assert stored.fingerprint == fingerprint(base)
    assert stored.shapes == {k: tuple(v.shape) for k, v in base.state_dict().items()}


def test_sharding_changes_no_fingerprint(base: PreTrainedModel, tmp_path: Path) -> None:
    sharded = _saved(base, tmp_path / "sharded", max_shard_size="100KB")
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert describe_base_dir(sharded).fingerprint == fingerprint(base)


def test_each_part_of_the_stored_form_counts(base: PreTrainedModel, tmp_path: Path) -> None:
    folder = _saved(base, tmp_path)
    before = describe_base_dir(folder).fingerprint
    config = json.loads((folder / "config.json").read_text())
    # The library's own keys do not count; a model's do.
    (folder / "config.json").write_text(json.dumps(config | {"transformers_version": "9.9"}))
    assert describe_base_dir(folder).fingerprint == before
    (folder / "config.json").write_text(json.dumps(config | {"rope_theta": 1.0}))
    assert describe_base_dir(folder).fingerprint != before
    (folder / "config.json").write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    assert describe_base_dir(folder).fingerprint != before


def test_a_node_hashes_the_files_of_a_folder_whose_config_transformers_rewrites(
    base: PreTrainedModel, tmp_path: Path
) -> None:
    """A config listing its defaults (as older writers and the Hub's files do) is one
    transformers saves shorter: a folder is hashed from its files, as the CLI hashes it."""
    from mint.models.base import load_base_dir

    folder = _saved(base, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"output_attentions": False}))
    loaded = load_base_dir(str(folder))
    assert served_fingerprint(str(folder), loaded) == describe_base_dir(folder).fingerprint
    assert describe_base_dir(folder).fingerprint != fingerprint(base)


def test_describing_needs_no_torch(base: PreTrainedModel, tmp_path: Path) -> None:
    folder = _saved(base, tmp_path)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from mint.models.base_files import describe_base_dir\n"
        f"print(describe_base_dir({str(folder)!r}).fingerprint)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert found.stdout.strip() == fingerprint(base)


def _write_safetensors(file: Path, header: dict[str, object], data: bytes) -> None:
    raw = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x05\x00", "no header"),
        (struct.pack("<Q", 4) + b"[1] ", "its header is no JSON"),
        (struct.pack("<Q", 2**40) + b"{}", "no header"),
    ],
)
def test_a_file_that_is_no_safetensors_is_named(
    base: PreTrainedModel, tmp_path: Path, content: bytes, message: str
) -> None:
    folder = _saved(base, tmp_path)
    (folder / "model.safetensors").write_bytes(content)
    expected = re.escape(f"model.safetensors is not a safetensors file ({message})")
    with pytest.raises(FailedPrecondition, match=expected):
        describe_base_dir(folder)


def test_bad_entries_and_a_tensor_in_two_files_are_refused(
    base: PreTrainedModel, tmp_path: Path
) -> None:
    folder = _saved(base, tmp_path)
    extra = folder / "extra.safetensors"
    _write_safetensors(extra, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"")
    with pytest.raises(FailedPrecondition, match="tensor w's bytes lie outside the file"):
        describe_base_dir(folder)
    _write_safetensors(extra, {"w": {"dtype": "F32", "shape": "two"}}, b"")
    with pytest.raises(FailedPrecondition, match="tensor w has no valid entry"):
        describe_base_dir(folder)
    name = "lm_head.weight"
    _write_safetensors(
        extra, {name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"0000"
    )
    with pytest.raises(FailedPrecondition, match=f"tensor {name} is in both"):
        describe_base_dir(folder)
    extra.unlink()
    (folder / "config.json").write_text("[]")
    with pytest.raises(FailedPrecondition, match="holds no JSON object"):
        describe_base_dir(folder)


def test_a_key_twice_in_the_config_or_a_header_is_refused(
    base: PreTrainedModel, tmp_path: Path
) -> None:
    """Readers disagree on which of two equal keys wins: the fingerprint would not say
    which weights or config it is of."""
    folder = _saved(base, tmp_path)
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text.replace("{", '{"hidden_size": 1, ', 1))
    with pytest.raises(
        FailedPrecondition, match=re.escape("config.json has the key 'hidden_size' twice")
    ):
        describe_base_dir(folder)
    config.write_text(text)
    extra = folder / "extra.safetensors"
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    header = ('{"w": ' + entry + ', "w": ' + entry + "}").encode()
    extra.write_bytes(struct.pack("<Q", len(header)) + header + b"0000")
    with pytest.raises(
        FailedPrecondition, match=re.escape("extra.safetensors has the key 'w' twice")
    ):
        describe_base_dir(folder)
