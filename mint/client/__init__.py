"""Python clients for MinT.

- `Client` (blocking) and `AsyncClient` (asyncio): the registry and the router's inference
  API, with typed results (`mint.client.types`) and typed exceptions
  (`mint.client.errors`, all `MintError`).
- `describe_base`: a local model folder's fingerprint and shapes, for `register_base`.
- `pull` / `load_adapter`: a revision as a cached local PEFT folder / loaded with PEFT.
- `RegistryClient`: the protobuf-level registry client underneath `Client`.

The bare `pip install mint` is enough for all of it but `load_adapter`, which needs
torch (`mint[serving]`).
"""

from .aio import AsyncClient
from .base_model import MissingExtra, describe_base
from .errors import (
    AlreadyExists,
    Cancelled,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MintError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .pull import load_adapter, pull
from .registry import CHUNK_BYTES, RETRYABLE, RegistryClient, Replicas, parse_ref
from .retry import replica_addresses
from .sync import Client
from .types import (
    Adapter,
    AdapterSummary,
    BaseModel,
    CommandResult,
    Evaluation,
    Event,
    Gate,
    Generation,
    GenerationChunk,
    OutputProvenance,
    Page,
    Provenance,
    ResolvedAdapter,
    Revision,
    Sampling,
    Score,
    Selector,
)
from .watch import AsyncWatch, Watch

__all__ = [
    "CHUNK_BYTES",
    "RETRYABLE",
    "Adapter",
    "AdapterSummary",
    "AlreadyExists",
    "AsyncClient",
    "AsyncWatch",
    "BaseModel",
    "Cancelled",
    "Client",
    "CommandResult",
    "Conflict",
    "DataLoss",
    "DeadlineExceeded",
    "Evaluation",
    "Event",
    "FailedPrecondition",
    "Gate",
    "Generation",
    "GenerationChunk",
    "InvalidArgument",
    "MintError",
    "MissingExtra",
    "NotFound",
    "OutputProvenance",
    "Page",
    "PermissionDenied",
    "Provenance",
    "RegistryClient",
    "Replicas",
    "ResolvedAdapter",
    "ResourceExhausted",
    "Revision",
    "Sampling",
    "Score",
    "Selector",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "describe_base",
    "load_adapter",
    "parse_ref",
    "pull",
    "replica_addresses",
]
