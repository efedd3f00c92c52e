"""Validation of one adapter upload (config + weights) against its registered base model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import regex

from mint.domain.errors import InvalidArgument

from .limits import Limits
from .peft_config import LoraAdapterConfig, parse_config
from .safetensors_bytes import TensorInfo, check_finite, read_header

PEFT_PREFIX = "base_model.model."
MAX_PATTERN_CHARS = 512
PATTERN_TIMEOUT_S = 0.05
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<side>[AB])\.weight")


@dataclass(frozen=True)
class ValidatedAdapter:
    config: LoraAdapterConfig
    config_json: str  # canonical
    modules: tuple[str, ...]  # base module paths the adapter wraps


def validate_adapter(
    config_bytes: bytes,
    weights: bytes,
    base_parameters: Mapping[str, tuple[int, ...]],
    limits: Limits | None = None,
) -> ValidatedAdapter:
    """Check everything about an upload; raise InvalidArgument saying what is wrong."""
    limits = limits or Limits()
    config, config_json = parse_config(config_bytes, limits)
    tensors, data_start = read_header(weights, limits)
    if not tensors:
        raise InvalidArgument("the weights file holds no tensors")
    pairs = _pair_up(tensors)
    for module, (a, b) in sorted(pairs.items()):
        _check_module(module, a, b, config, base_parameters)
    check_finite(weights, data_start, tensors)
    return ValidatedAdapter(config, config_json, tuple(sorted(pairs)))


def _pair_up(tensors: dict[str, TensorInfo]) -> dict[str, tuple[TensorInfo, TensorInfo]]:
    sides: dict[str, dict[str, TensorInfo]] = {}
    for name, info in tensors.items():
        match = _LORA_KEY.fullmatch(name.removeprefix(PEFT_PREFIX))
        if not name.startswith(PEFT_PREFIX) or match is None:
            raise InvalidArgument(
                f"unexpected tensor {name!r}: expected {PEFT_PREFIX}<module>.lora_A.weight "
                "or .lora_B.weight (as peft's save_pretrained writes)"
            )
        sides.setdefault(match["module"], {})[match["side"]] = info
    for module, found in sides.items():
        if found.keys() != {"A", "B"}:
            raise InvalidArgument(f"module {module!r} has lora_{''.join(found)} but not both")
    return {m: (s["A"], s["B"]) for m, s in sides.items()}


def _pattern_matches(pattern: str, module: str) -> bool:
    """PEFT's string form of target_modules is a regex; a user's regex runs under a time
    limit (the `regex` module's timeout) so a catastrophic one cannot stall the server."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(f"target_modules pattern longer than {MAX_PATTERN_CHARS} chars")
    try:
        return regex.fullmatch(pattern, module, timeout=PATTERN_TIMEOUT_S) is not None
    except regex.error as exc:
        raise InvalidArgument(f"target_modules is not a valid pattern: {exc}") from None
    except TimeoutError:
        raise InvalidArgument("target_modules pattern is too expensive to evaluate") from None


def _check_module(
    module: str,
    a: TensorInfo,
    b: TensorInfo,
    config: LoraAdapterConfig,
    base: Mapping[str, tuple[int, ...]],
) -> None:
    targets = config.targets()
    leaf = module.rsplit(".", 1)[-1]
    targeted = leaf in targets if isinstance(targets, set) else _pattern_matches(targets, module)
    if not targeted:
        raise InvalidArgument(f"module {module!r} is not among target_modules {targets!r}")
    base_shape = base.get(f"{module}.weight")
    if base_shape is None:
        raise InvalidArgument(f"the base model has no module {module!r} (no {module}.weight)")
    if len(base_shape) != 2:
        raise InvalidArgument(f"{module!r} is not a linear layer in the base model")
    out_features, in_features = base_shape[::-1] if config.fan_in_fan_out else base_shape
    rank = config.rank_for(module)
    if a.shape != (rank, in_features) or b.shape != (out_features, rank):
        raise InvalidArgument(
            f"module {module!r}: lora_A {list(a.shape)} / lora_B {list(b.shape)} do not fit "
            f"the base ({out_features}x{in_features}) at rank {rank}: expected "
            f"[{rank}, {in_features}] / [{out_features}, {rank}]"
        )
