"""From stored bytes to servable weights: safetensors parsed in memory (no temp files,
never pickle) while the sha256 is computed beside, the config read with the upload
validator's model; nothing is served before the hash matched."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from mint.domain.errors import DataLoss, NotFound
from mint.models.lora import load_adapter_weights
from mint.validation.limits import Limits
from mint.validation.peft_config import LoraAdapterConfig, parse_config

from .catalog import Catalog, weights_key
from .disk_cache import DiskCache
from .packed_model import LoraWeights
from .requests import RevisionRef


def weights_from_bytes(data: bytes, sha256: str, config_json: str) -> LoraWeights:
    check_sha256(hashlib.sha256(data).hexdigest(), sha256)
    return parse_weights(data, parse_config(config_json.encode(), Limits())[0])


def check_sha256(digest: str, recorded: str) -> None:
    if digest != recorded:
        raise DataLoss(f"adapter weights hash to {digest}, not the recorded {recorded}")


def parse_weights(data: bytes, config: LoraAdapterConfig) -> LoraWeights:
    """safetensors bytes (sha256 already checked) → LoRA weights, never pickle."""
    return LoraWeights.from_peft(
        load_adapter_weights(data), config.lora_alpha, config.use_rslora, config.alpha_pattern
    )


@dataclass(frozen=True)
class Fetched:
    """Weights parsed from bytes that may not be the recorded ones until `verify`
    returns: their hash is computed on another core meanwhile."""

    ref: RevisionRef  # as the projection's manifest describes it (with its base)
    weights: LoraWeights
    data: bytes
    fetch_s: float  # object store reads
    parse_s: float  # config and safetensors parsing
    from_disk: bool = False  # found in the node's disk tier (hashed again there)
    digest: Future[str] | None = None  # the sha256 of `data`, being computed

    def verify(self) -> None:
        """DataLoss unless the bytes hash to the recorded sha256."""
        if self.digest is not None:
            check_sha256(self.digest.result(), self.ref.weights_sha256)

    def keep(self, disk: DiskCache | None) -> None:
        """Put verified bytes on the disk tier for next time."""
        if disk is not None and not self.from_disk:
            self.verify()
            disk.put(self.ref.weights_sha256, self.data)


_READERS = ThreadPoolExecutor(max_workers=6, thread_name_prefix="fetch")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_revision(catalog: Catalog, ref: RevisionRef, disk: DiskCache | None = None) -> Fetched:
    """The revision's weights, from the local disk tier if it has them, else from the
    projection; `verify()` before serving them (`ServingEngine.load` takes it, so that the
    hash runs while the weights are copied into a slot), `keep()` once served. An intent
    carries the base and the config, so that is one read; without them, the manifest is
    read alongside and must agree with `ref`."""
    started = time.perf_counter()
    described = None
    if not (ref.config_json and ref.base_fingerprint):
        described = _READERS.submit(catalog.revision, ref.adapter, ref.revision)
    data = disk.get(ref.weights_sha256) if disk is not None else None  # re-hashed there
    from_disk, digest = data is not None, None
    if data is None:
        data = catalog.objects.get(weights_key(ref))
        if data is None:
            raise NotFound(f"{ref.label}: its weights are not in the projection (yet)")
        # Hashed on another core while this one parses and copies (hashlib lets go of
        # the GIL); the weights are served only once the hash matched.
        digest = _READERS.submit(_sha256, data)
    if described is not None:
        manifest = described.result()
        if (manifest.adapter_id, manifest.weights_sha256) != (ref.adapter_id, ref.weights_sha256):
            raise DataLoss(f"the projection's {ref.label} is not the revision the intent names")
        ref = manifest
    fetched = time.perf_counter()
    config, _ = parse_config(ref.config_json.encode(), Limits())
    try:
        weights = parse_weights(data, config)
    except Exception:  # altered bytes are reported as such, also when they do not parse
        if digest is not None:
            check_sha256(digest.result(), ref.weights_sha256)
        raise
    parsed = time.perf_counter()
    return Fetched(ref, weights, data, fetched - started, parsed - fetched, from_disk, digest)
