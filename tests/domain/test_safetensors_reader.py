"""The safetensors reader: a file is judged by parsing it, whatever its first bytes look
like, and a header that names anything twice is refused (no servers)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from mint.domain.errors import InvalidArgument
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.validation.adapter import validate_adapter
from mint.validation.limits import Limits
from mint.validation.safetensors_bytes import read_header
from tests.domain.safetensors_files import (
    LOOKS_LIKE_PICKLE,
    LOOKS_LIKE_ZIP,
    Pairs,
    header_length,
    save_with_header_length,
    split,
    with_header,
)

Shapes = dict[str, tuple[int, ...]]


@pytest.fixture(scope="module")
def shapes() -> Shapes:
    base = build_base(tiny_llama_config(), seed=0)
    return {k: tuple(v.shape) for k, v in base.state_dict().items()}


def _save_pretrained(folder: Path, rank: int, targets: tuple[str, ...]) -> tuple[bytes, bytes]:
    base = build_base(tiny_llama_config(), seed=0)
    attach_lora(base, rank=rank, targets=targets, seed=1).save_pretrained(str(folder))
    return (folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes()


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return _save_pretrained(tmp_path_factory.mktemp("adapter"), 4, ("q_proj", "v_proj"))


def test_peft_adapter_whose_header_length_starts_with_0x80_is_accepted(
    tmp_path: Path, shapes: Shapes
) -> None:
    # r=1 on q/k/v and the MLP projections: peft writes a 2,944-byte (0xB80) header, so
    # the file starts with 0x80, pickle's first byte.
    targets = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
    config, weights = _save_pretrained(tmp_path, 1, targets)
    assert header_length(weights) % 256 == 0x80 and weights[:1] == b"\x80"
    result = validate_adapter(config, weights, shapes)
    assert len(result.modules) == 12  # 6 projections in 2 layers
    assert result.config.r == 1


@pytest.mark.parametrize(
    "low",
    [LOOKS_LIKE_PICKLE, (0x280, 65536), (0x480, 65536), LOOKS_LIKE_ZIP],
    ids=["0x80", "0x80 then protocol 2", "0x80 then protocol 4", "PK"],
)
def test_header_length_whose_bytes_spell_another_format_is_accepted(
    peft_adapter: tuple[bytes, bytes], shapes: Shapes, low: tuple[int, int]
) -> None:
    config, weights = peft_adapter
    tensors = safetensors.torch.load(weights)
    padded = save_with_header_length(tensors, {"format": "pt"}, low)
    assert header_length(padded) % low[1] == low[0]
    assert (
        validate_adapter(config, padded, shapes).modules
        == validate_adapter(config, weights, shapes).modules
    )


def _torch_save(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"lora_A": [[0.1]]}, protocol=2),
        pickle.dumps({"lora_A": [[0.1]]}),
        _torch_save({"lora_A": torch.zeros(2, 2)}),
    ],
    ids=["pickle protocol 2", "pickle", "torch.save"],
)
def test_pickle_and_torch_save_files_are_still_named(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"look like a pickle or torch\.save file"):
        read_header(data, Limits())


def test_truncated_file_whose_first_byte_is_0x80_is_named_truncated() -> None:
    data = save_with_header_length({"a": torch.zeros(2)}, None, LOOKS_LIKE_PICKLE)
    with pytest.raises(InvalidArgument, match="truncated"):
        read_header(data[:100], Limits())


_ENTRY = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (Pairs((("a", _ENTRY), ("a", _ENTRY))), "a"),
        (Pairs((("a", {**_ENTRY, "dtype": "BF16", "shape": [2]}), ("a", _ENTRY))), "a"),
        ({"a": Pairs((("dtype", "F16"), *_ENTRY.items()))}, "dtype"),
        ({"__metadata__": Pairs((("k", "1"), ("k", "2"))), "a": _ENTRY}, "k"),
    ],
    ids=["tensor twice", "shadowed tensor", "field twice", "metadata key twice"],
)
def test_a_key_twice_anywhere_in_the_header_is_refused_by_name(header: object, key: str) -> None:
    data = with_header(header, b"\0" * 4)
    with pytest.raises(InvalidArgument, match=f"key '{key}' more than once"):
        read_header(data, Limits())


def test_adapter_with_a_shadowed_nan_tensor_is_refused(
    peft_adapter: tuple[bytes, bytes], shapes: Shapes
) -> None:
    """The published case: a tensor named twice over the same bytes, first as BF16, then as
    F32. The F32 entry (the one a last-wins reader checks) is finite; read as BF16, as a
    first-wins reader would, the bytes hold NaN."""
    config, weights = peft_adapter
    tensors = safetensors.torch.load(weights)
    name = next(iter(tensors))
    bits = tensors[name].view(torch.int32)
    bits[0, 0] = (bits[0, 0] & ~0xFFFF) | 0x7FC0  # low half: a BF16 NaN; the F32 stays finite
    assert torch.isfinite(tensors[name]).all()
    assert tensors[name].view(torch.bfloat16).isnan().any()
    header, data = split(safetensors.torch.save(tensors))
    entry = header[name]
    assert isinstance(entry, dict)
    rows, cols = entry["shape"]
    shadow = {**entry, "dtype": "BF16", "shape": [rows, cols * 2]}
    members = tuple((k, v) for k, v in header.items() if k != name)
    forged = with_header(Pairs(((name, shadow), *members, (name, entry))), data)
    with pytest.raises(InvalidArgument, match=f"key '{name}' more than once"):
        validate_adapter(config, forged, shapes)
