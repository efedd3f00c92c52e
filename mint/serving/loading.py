"""From stored bytes to servable weights: safetensors read in memory (no temp files,
never pickle), each tensor a view of the bytes rather than a copy, while the sha256 is
computed beside; the config read with the upload validator's model; nothing is served
before the hash matched."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from mint.domain.errors import DataLoss, NotFound
from mint.validation.limits import Limits
from mint.validation.peft_config import LoraAdapterConfig, parse_config
from mint.validation.safetensors_bytes import ITEM_SIZE

from .catalog import Catalog, weights_key
from .disk_cache import DiskCache
from .host_reserve import HostReserve
from .packed_model import LoraWeights
from .requests import RevisionRef


def weights_from_bytes(data: bytes, sha256: str, config_json: str) -> LoraWeights:
    check_sha256(hashlib.sha256(data).hexdigest(), sha256)
    return parse_weights(data, parse_config(config_json.encode(), Limits())[0])


def check_sha256(digest: str, recorded: str) -> None:
    if digest != recorded:
        raise DataLoss(f"adapter weights hash to {digest}, not the recorded {recorded}")


def parse_weights(data: bytes | memoryview, config: LoraAdapterConfig) -> LoraWeights:
    """safetensors bytes → LoRA weights, never pickle."""
    return LoraWeights.from_peft(
        tensor_views(data), config.lora_alpha, config.use_rslora, config.alpha_pattern
    )


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# Views of immutable bytes: nothing writes into weights (slots and host copies copy them).
warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)


def tensor_views(data: bytes | memoryview) -> dict[str, torch.Tensor]:
    """Every tensor of safetensors `data` as a view of those bytes: the weights are
    copied once, into a slot, not first into tensors of their own (the safetensors
    library's copies took a millisecond of a 2 MB load's critical path). The bytes
    passed the strict reader at upload and are served only once their hash matches;
    here they need only be read safely: torch checks each view against the buffer's
    bounds and the tensor's shape, and whatever does not read is DataLoss."""
    try:
        (header_len,) = struct.unpack_from("<Q", data)
        if 8 + header_len > len(data):
            raise ValueError("the header runs past the end")
        header = json.loads(bytes(data[8 : 8 + header_len]))
        if not isinstance(header, dict):
            raise TypeError("the header is no JSON object")
        header.pop("__metadata__", None)
        start = 8 + header_len
        return {name: _view(data, start, spec) for name, spec in header.items()}
    except (ValueError, TypeError, KeyError, RuntimeError, OverflowError, struct.error) as exc:
        raise DataLoss(f"adapter weights do not read as safetensors: {exc}") from exc


def _view(data: bytes | memoryview, start: int, spec: dict[str, Any]) -> torch.Tensor:
    dtype, shape = _DTYPES[spec["dtype"]], spec["shape"]
    begin, end = spec["data_offsets"]
    count, odd = divmod(end - begin, ITEM_SIZE[spec["dtype"]])
    if begin < 0 or count < 0 or odd:
        raise ValueError(f"data_offsets {spec['data_offsets']} do not frame a tensor")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin).view(shape)


@dataclass(frozen=True)
class Fetched:
    """Weights parsed from bytes that may not be the recorded ones until `verify`
    returns: their hash is computed on another core meanwhile."""

    ref: RevisionRef  # as the projection's manifest describes it (with its base)
    weights: LoraWeights
    data: bytes | memoryview  # what the weights are views of
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


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_revision(
    catalog: Catalog,
    ref: RevisionRef,
    disk: DiskCache | None = None,
    reserve: HostReserve | None = None,
) -> Fetched:
    """The revision's weights, from the local disk tier if it has them, else from the
    projection; `verify()` before serving them (`ServingEngine.load` takes it, so that the
    hash runs while the weights are copied into a slot), `keep()` once served. An intent
    carries the base and the config, so that is one read; without them, the manifest is
    read alongside and must agree with `ref`. With a `reserve` that has a buffer of their
    size, the weights are views of that buffer (for a node whose host tier keeps them as
    they are stored); the hash is of the fetched bytes, copied into it as they are."""
    started = time.perf_counter()
    described = None
    if not (ref.config_json and ref.base_fingerprint):
        described = _READERS.submit(catalog.revision, ref.adapter, ref.revision)
    data: bytes | memoryview | None = None
    if disk is not None:
        data = disk.get(ref.weights_sha256)  # re-hashed there
    from_disk, digest = data is not None, None
    if data is None:
        data = catalog.objects.get(weights_key(ref))
        if data is None:
            raise NotFound(f"{ref.label}: its weights are not in the projection (yet)")
    if not from_disk:
        # Hashed on another core while this one copies and parses (hashlib lets go of
        # the GIL); the weights are served only once the hash matched.
        digest = _READERS.submit(_sha256, data)
    data = _into_reserve(data, reserve)
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


def _into_reserve(data: bytes | memoryview, reserve: HostReserve | None) -> bytes | memoryview:
    """`data` copied into memory written beforehand, which is what the host tier then
    keeps, so `data`'s own buffer goes back to the allocator for the next read; `data`
    itself if the reserve has no buffer of its size."""
    buffer = None if reserve is None else reserve.take(len(data))
    if buffer is None:
        return data
    buffer.copy_(torch.frombuffer(data, dtype=torch.uint8))  # without the GIL
    return buffer.numpy().data
