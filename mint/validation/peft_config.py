"""`adapter_config.json` as a pydantic model: the fields MinT relies on, checked.

Fields PEFT writes that MinT does not interpret are kept as they are (extra="allow"), so a
config written by `save_pretrained` is stored unchanged and reloads with peft.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from mint.domain.errors import InvalidArgument, ResourceExhausted

from .limits import Limits

SUPPORTED_PEFT_TYPES = ("LORA",)


class LoraAdapterConfig(BaseModel):
    # strict: "4" is not a rank; no NaN or Infinity anywhere.
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)

    peft_type: Literal["LORA"]
    r: int = Field(gt=0, description="rank of the update matrices")
    lora_alpha: float = Field(gt=0, description="scale numerator: the update is alpha / r")
    target_modules: list[str] | str = Field(description="module names the adapter wraps")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    bias: Literal["none", "all", "lora_only"] = "none"
    fan_in_fan_out: bool = False
    use_dora: bool = False
    use_rslora: bool = False
    rank_pattern: dict[str, PositiveInt] = Field(default_factory=dict)
    alpha_pattern: dict[str, PositiveFloat] = Field(default_factory=dict)
    modules_to_save: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if not value:
            raise ValueError("target_modules is empty")
        return value

    def targets(self) -> set[str] | str:
        return (
            set(self.target_modules)
            if isinstance(self.target_modules, list)
            else self.target_modules
        )

    def rank_for(self, module_path: str) -> int:
        for pattern, rank in self.rank_pattern.items():
            if module_path == pattern or module_path.endswith("." + pattern):
                return rank
        return self.r


def parse_config(raw: bytes, limits: Limits) -> tuple[LoraAdapterConfig, str]:
    """The validated config and its canonical JSON (sorted keys) for the event."""
    if not raw:
        raise InvalidArgument("adapter_config.json is missing")
    if len(raw) > limits.max_config_bytes:
        raise ResourceExhausted(f"adapter_config.json exceeds {limits.max_config_bytes} bytes")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidArgument("adapter_config.json is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise InvalidArgument(f"adapter_config.json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("adapter_config.json is not a JSON object")
    peft_type = doc.get("peft_type")
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise InvalidArgument(
            f"unsupported peft_type {peft_type!r}; supported: {list(SUPPORTED_PEFT_TYPES)}"
        )
    try:
        config = LoraAdapterConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidArgument(f"adapter_config.json: {problems}") from None
    if config.use_dora:
        raise InvalidArgument("DoRA adapters are not supported yet (use_dora must be false)")
    if max([config.r, *config.rank_pattern.values()]) > limits.max_rank:
        raise InvalidArgument(f"rank exceeds the limit of {limits.max_rank}")
    return config, json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
