"""MinT: an event-sourced state platform for persistent per-user PEFT adapters.

    import mint
    with mint.Client("127.0.0.1:50051", router="127.0.0.1:50060", token="...") as client:
        print(client.generate("Hello", "acme/tone@stable").text)

The clients (`mint.Client`, `mint.AsyncClient`, their errors and results) are loaded on
first use, so that importing any part of MinT (the domain core, a service) does not import
them. Layout: `mint.client` holds the clients; `mint.v1` is generated from proto/ (never
edited by hand); `mint.backends` holds the infrastructure clients (Kafka, S3);
`mint.models` the torch side (base models, LoRA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "MintError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Sampling",
    "Selector",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "describe_base",
    "load_adapter",
    "pull",
]
# What `mint.<name>` gives, from mint.client.
_CLIENT_NAMES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from mint.client import (
        AlreadyExists,
        AsyncClient,
        Client,
        Conflict,
        DeadlineExceeded,
        FailedPrecondition,
        InvalidArgument,
        MintError,
        NotFound,
        PermissionDenied,
        ResourceExhausted,
        Sampling,
        Selector,
        Unauthenticated,
        Unavailable,
        describe_base,
        load_adapter,
        pull,
    )


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from mint import client

        return getattr(client, name)
    raise AttributeError(f"module 'mint' has no attribute {name!r}")
