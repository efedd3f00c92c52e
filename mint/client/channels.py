"""The clients' gRPC channels: to each registry replica, and to the router.

Registry commands are retried by the clients themselves (`retry.py` says why); inference
calls go to one router (a Service in front of many), and UNAVAILABLE there (a router
restarting, no node reporting yet) is retried by gRPC's own retry policy, before any answer
has come, so a stream is never replayed halfway.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import grpc.aio

from mint.rpc.tls import TlsFiles, server_name_options

_ROUTER_RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [{"service": "mint.v1.Inference"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
Options = list[tuple[str, Any]]


def replica_options(server_name: str | None) -> Options:
    # A single name may stand for many replicas (a Kubernetes Service): spread over them.
    return [("grpc.lb_policy_name", "round_robin"), *server_name_options(server_name)]


def router_options(server_name: str | None) -> Options:
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(_ROUTER_RETRY_POLICY)),
        *server_name_options(server_name),
    ]


def open_channel(address: str, tls: TlsFiles | None, options: Options) -> grpc.Channel:
    """Plaintext without `tls`; with it, TLS verified against its CA."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options)


def open_aio_channel(address: str, tls: TlsFiles | None, options: Options) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options)
