"""Upload validation: adapters written by peft pass unchanged; malformed ones are named."""

from __future__ import annotations

import json
import pickle
import re
import struct
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


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, dict]:
    base = build_base(tiny_llama_config(), seed=0)
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    folder: Path = tmp_path_factory.mktemp("adapter")
    attach_lora(base, rank=4, seed=1).save_pretrained(str(folder))
    return (folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes(), shapes


def _weights(saved: tuple[bytes, bytes, dict]) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(saved[1])


def test_peft_save_pretrained_output_validates_as_is(saved) -> None:
    config, weights, shapes = saved
    result = validate_adapter(config, weights, shapes)
    assert result.config.r == 4
    assert "model.layers.0.self_attn.q_proj" in result.modules
    assert len(result.modules) == 4  # q and v in 2 layers
    assert json.loads(result.config_json) == json.loads(config)


def _mutated_config(saved, **changes) -> bytes:
    doc = json.loads(saved[0])
    doc.update(changes)
    return json.dumps(doc).encode()


def _header_bytes(header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def _cases(saved):
    config, weights, _ = saved
    tensors = _weights(saved)
    first = next(iter(tensors))
    nan = dict(tensors)
    nan[first] = tensors[first].clone()
    nan[first][0, 0] = float("nan")
    wrong_shape = dict(tensors)
    wrong_shape[first] = torch.zeros(tensors[first].shape[0] + 1, tensors[first].shape[1])
    f64 = {k: v.double() for k, v in tensors.items()}
    extra = {**tensors, "base_model.model.lm_head.weight": torch.zeros(2, 2)}
    only_a = {k: v for k, v in tensors.items() if "lora_B" not in k}
    return {
        "truncated": (config, weights[: len(weights) // 2], "truncated"),
        "oversized header": (config, struct.pack("<Q", 10**9) + b"{}", "header declares"),
        "pickle renamed": (config, pickle.dumps({"w": [1.0]}), "not safetensors"),
        "empty file": (config, b"", "shorter than"),
        "header not json": (config, _header_bytes({})[:8] + b"\x80" * 2, "not safetensors"),
        "wrong shape": (config, safetensors.torch.save(wrong_shape), "do not fit"),
        "wrong dtype": (config, safetensors.torch.save(f64), "dtype 'F64'"),
        "nan": (config, safetensors.torch.save(nan), "NaN or Inf"),
        "unexpected tensor": (config, safetensors.torch.save(extra), "unexpected tensor"),
        "lora_A without B": (config, safetensors.torch.save(only_a), "not both"),
        "unknown peft type": (
            _mutated_config(saved, peft_type="PROMPT_TUNING"),
            weights,
            "unsupported peft_type",
        ),
        "missing config": (b"", weights, "missing"),
        "config not json": (b"{nope", weights, "not valid JSON"),
        "rank mismatch": (_mutated_config(saved, r=8), weights, "at rank 8"),
        "bad alpha": (_mutated_config(saved, lora_alpha=-1), weights, "lora_alpha"),
        "untargeted module": (
            _mutated_config(saved, target_modules=["k_proj"]),
            weights,
            "not among target_modules",
        ),
        "catastrophic regex": (
            _mutated_config(saved, target_modules=r"((.|\w)+)+0"),  # backtracks 2^n
            weights,
            "too expensive",
        ),
        "invalid regex": (
            _mutated_config(saved, target_modules="(unclosed"),
            weights,
            "not a valid pattern",
        ),
        "rank as a string": (_mutated_config(saved, r="4"), weights, "r:"),
        "infinite alpha": (
            re.sub(rb'"lora_alpha": [0-9.]+', b'"lora_alpha": Infinity', config),
            weights,
            "Infinity",
        ),
        "zero rank pattern": (
            _mutated_config(saved, rank_pattern={"q_proj": 0}),
            weights,
            "rank_pattern",
        ),
        "deeply nested config": (b"[" * 30_000 + b"]" * 30_000, weights, "nested too deeply"),
        "bool as a dimension": (
            config,
            _header_bytes({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}})
            + b"\0" * 4,
            "not a list of sizes",
        ),
        "unhashable dtype": (
            config,
            _header_bytes({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}})
            + b"\0" * 4,
            "has dtype",
        ),
        "non-string metadata": (
            config,
            _header_bytes({"__metadata__": {"format": 1}}),
            "__metadata__",
        ),
        "offsets overlap": (
            config,
            _header_bytes(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                }
            )
            + b"\0" * 4,
            "overlaps",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "oversized header",
        "pickle renamed",
        "empty file",
        "header not json",
        "wrong shape",
        "wrong dtype",
        "nan",
        "unexpected tensor",
        "lora_A without B",
        "unknown peft type",
        "missing config",
        "config not json",
        "rank mismatch",
        "bad alpha",
        "untargeted module",
        "offsets overlap",
        "catastrophic regex",
        "invalid regex",
        "rank as a string",
        "infinite alpha",
        "zero rank pattern",
        "deeply nested config",
        "bool as a dimension",
        "unhashable dtype",
        "non-string metadata",
    ],
)
def test_bad_upload_is_refused_with_a_reason(saved, case: str) -> None:
    config, weights, reason = _cases(saved)[case]
    with pytest.raises(InvalidArgument, match=reason):
        validate_adapter(config, weights, saved[2])


def test_size_limit(saved) -> None:
    with pytest.raises(InvalidArgument, match="limit"):
        validate_adapter(saved[0], saved[1], saved[2], Limits(max_weights_bytes=1000))


def test_other_base_model_shapes_are_refused(saved) -> None:
    other = build_base(tiny_llama_config(hidden=32), seed=0)
    shapes = {k: tuple(v.shape) for k, v in other.state_dict().items()}
    with pytest.raises(InvalidArgument, match="do not fit"):
        validate_adapter(saved[0], saved[1], shapes)
