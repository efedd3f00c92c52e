"""From stored bytes to servable weights: sha256 checked first, safetensors parsed in
memory (no temp files, never pickle), the config read with the upload validator's model."""

from __future__ import annotations

import hashlib

from mint.domain.errors import DataLoss
from mint.models.lora import load_adapter_weights
from mint.validation.limits import Limits
from mint.validation.peft_config import parse_config

from .packed_model import LoraWeights


def weights_from_bytes(data: bytes, sha256: str, config_json: str) -> LoraWeights:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataLoss(f"adapter weights hash to {digest}, not the recorded {sha256}")
    config, _ = parse_config(config_json.encode(), Limits())
    return LoraWeights.from_peft(
        load_adapter_weights(data), config.lora_alpha, config.use_rslora, config.alpha_pattern
    )
