"""From stored bytes to servable weights: sha256 checked first, safetensors parsed in
memory (no temp files, never pickle), the config read with the upload validator's model."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from mint.domain.errors import DataLoss, NotFound
from mint.models.lora import load_adapter_weights
from mint.validation.limits import Limits
from mint.validation.peft_config import parse_config

from .catalog import ObjectSource, config_key, weights_key
from .packed_model import LoraWeights
from .requests import RevisionRef


def weights_from_bytes(data: bytes, sha256: str, config_json: str) -> LoraWeights:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataLoss(f"adapter weights hash to {digest}, not the recorded {sha256}")
    config, _ = parse_config(config_json.encode(), Limits())
    return LoraWeights.from_peft(
        load_adapter_weights(data), config.lora_alpha, config.use_rslora, config.alpha_pattern
    )


@dataclass(frozen=True)
class Fetched:
    weights: LoraWeights
    nbytes: int
    fetch_s: float  # object store reads
    parse_s: float  # sha256, config and safetensors parsing


def fetch_revision(objects: ObjectSource, ref: RevisionRef) -> Fetched:
    """The revision's weights from the projection, verified against the recorded sha256."""
    started = time.perf_counter()
    data, config = objects.get(weights_key(ref)), objects.get(config_key(ref))
    if data is None or config is None:
        raise NotFound(f"{ref.label}: its files are not in the projection (yet)")
    fetched = time.perf_counter()
    weights = weights_from_bytes(data, ref.weights_sha256, config.decode())
    return Fetched(weights, len(data), fetched - started, time.perf_counter() - fetched)
