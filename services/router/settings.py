"""The router's settings."""

from __future__ import annotations

import socket
from typing import Self

from pydantic import Field, PositiveFloat, SecretStr, model_validator

from mint.rpc.tls import NODE_SERVER_NAME
from mint.settings import (
    GrpcServerOptions,
    KafkaOptions,
    ProcessOptions,
    ProjectionOptions,
    ResidencyOptions,
    S3Options,
    grpc_port,
    metrics_port,
    option,
)


class RouterSettings(
    GrpcServerOptions,
    KafkaOptions,
    S3Options,
    ProjectionOptions,
    ResidencyOptions,
    ProcessOptions,
):
    name: str = Field(default_factory=socket.gethostname, description="router name in reports")
    port: int = grpc_port(50060)
    metrics_port: int = metrics_port(9465)
    service_token: SecretStr | None = Field(
        None,
        description='the token the router calls nodes with: a "service" entry of their '
        "tokens file (a secret); not needed when its certificate (tls_cert_file) is its "
        "credential toward nodes over mutual TLS",
    )

    @model_validator(mode="after")
    def _has_a_credential_toward_nodes(self) -> Self:
        if self.service_token is None and self.tls_cert_file is None:
            raise ValueError(
                "the router needs a credential toward the nodes: pass "
                f"{option('service_token')} (a secret file is best), or "
                f"{option('tls_cert_file')} and {option('tls_key_file')} for mutual TLS"
            )
        if self.tls_cert_file is not None and self.tls_ca_file is None:
            raise ValueError(
                "with a certificate the router dials nodes over TLS and checks theirs "
                f"against the CA that signed them: pass {option('tls_ca_file')}"
            )
        return self

    node_server_name: str = Field(
        NODE_SERVER_NAME,
        description="the name nodes' certificates carry (nodes are dialled by pod IP)",
    )
    silence_s: PositiveFloat = Field(4.0, description="seconds of silence that make a node dead")
    cold_start_s: PositiveFloat = Field(
        30.0, description="longest wait for a placement on a miss (calls without a deadline)"
    )
    grace_s: PositiveFloat = Field(5.0, description="seconds to drain calls on SIGTERM")
