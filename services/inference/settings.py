"""An inference node's settings."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from mint.rpc.tls import ROUTER_PEER_NAME
from mint.settings import (
    GrpcServerOptions,
    KafkaOptions,
    ProjectionOptions,
    ResidencyOptions,
    S3Options,
    grpc_port,
    metrics_port,
)


class NodeSettings(GrpcServerOptions, KafkaOptions, S3Options, ProjectionOptions, ResidencyOptions):
    name: str = Field(description="node name, unique in the fleet (the pod name)")
    port: int = grpc_port(50061)
    advertise_host: str = Field("127.0.0.1", description="host the router dials (the pod IP)")
    metrics_port: int = metrics_port(9466)
    base_dir: str | None = Field(
        None, description="a local transformers causal-LM directory (none: a tiny built-in base)"
    )
    base_seed: int = Field(0, description="seed of the built-in base")
    targets: str = Field("q_proj,v_proj", description="LoRA target modules, comma-separated")
    slots: PositiveInt = Field(64, description="adapter slots (slot 0: none)")
    max_rank: PositiveInt = Field(32, description="largest (stacked) rank")
    budget_mib: PositiveFloat = Field(256, description="adapter memory budget, MiB")
    disk_cache_dir: str | None = Field(None, description="local disk tier for adapter weights")
    disk_cache_mib: PositiveFloat = Field(4096, description="its budget, MiB")
    max_prompt_tokens: PositiveInt = Field(1024, description="longest prompt")
    batch_window_ms: NonNegativeFloat = Field(5.0, description="how long a batch gathers")
    max_batch: PositiveInt = Field(32, description="most requests in one batch")
    grace_s: PositiveFloat = Field(5.0, description="seconds to drain calls on SIGTERM")
    trusted_peers: str = Field(
        ROUTER_PEER_NAME,
        description="certificate names, comma-separated, of services (the router) that may "
        "act for the callers they name without a token; needs tls_require_client_cert",
    )
