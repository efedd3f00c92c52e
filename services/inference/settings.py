"""An inference node's settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from mint.rpc.tls import ROUTER_PEER_NAME
from mint.serving.rank_classes import SlotLayout
from mint.settings import (
    GrpcServerOptions,
    KafkaOptions,
    ProcessOptions,
    ProjectionOptions,
    ResidencyOptions,
    ResponsesOptions,
    S3Options,
    grpc_port,
    metrics_port,
)


class NodeSettings(
    GrpcServerOptions,
    KafkaOptions,
    S3Options,
    ProjectionOptions,
    ResidencyOptions,
    ProcessOptions,
    ResponsesOptions,
):
    name: str = Field(description="node name, unique in the fleet (the pod name)")
    port: int = grpc_port(50061)
    advertise_host: str = Field("127.0.0.1", description="host the router dials (the pod IP)")
    metrics_port: int = metrics_port(9466)
    base_dir: str | None = Field(
        None, description="a local transformers causal-LM directory (none: a tiny built-in base)"
    )
    base_seed: int = Field(0, description="seed of the built-in base")
    targets: str = Field("q_proj,v_proj", description="LoRA target modules, comma-separated")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="where the base and the adapter slots live: auto (the first GPU if "
        "torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="dtype of the base and the adapters: auto (bfloat16 on a GPU, float32 "
        "on the CPU), float32, bfloat16 or float16",
    )
    slots: PositiveInt = Field(64, description="adapter slots on the device (slot 0: none)")
    max_rank: PositiveInt = Field(32, description="largest (stacked) rank")
    rank_classes: str = Field(
        "auto",
        description="rank classes of the device slots, each with slots of its own: auto "
        "(the powers of two below --max-rank, and --max-rank), or ranks with optional "
        "slot counts such as 8,16,32 or 8:96,32:16 (a class without a count has --slots); "
        "an adapter takes a slot of the smallest class that fits its rank",
    )
    lora_kernel: Literal["auto", "torch"] = Field(
        "auto",
        description="how a batch's LoRA deltas are computed: auto (the fused Triton kernel "
        "on a GPU, gathered torch products on the CPU) or torch (gathered torch products "
        "everywhere: the reference)",
    )
    decode_graphs: Literal["auto", "off"] = Field(
        "auto",
        description="decode passes replayed from CUDA graphs, one per padded batch size and "
        "width: auto (on a GPU; a capture that fails turns them off, logged) or off",
    )
    budget_mib: PositiveFloat = Field(256, description="budget of the device slots, MiB")
    host_budget_mib: PositiveFloat = Field(
        1024,
        description="budget of the adapters held in host memory, MiB (every resident "
        "adapter; at least --budget-mib): they are copied into a slot when requested",
    )
    host_reserve_mib: NonNegativeFloat = Field(
        32,
        description="host memory written ahead of loads, MiB, so that a CPU node filling up "
        "does not fault each adapter's pages in while loading it (0: none)",
    )
    disk_cache_dir: str | None = Field(None, description="local disk tier for adapter weights")
    disk_cache_mib: PositiveFloat = Field(4096, description="its budget, MiB")
    max_prompt_tokens: PositiveInt = Field(1024, description="longest prompt")
    batch_window_ms: NonNegativeFloat = Field(
        5.0, description="how long an idle node waits for a burst of requests to start with"
    )
    max_batch: PositiveInt = Field(32, description="most requests running at once")
    max_queue: PositiveInt = Field(
        256, description="most requests waiting to run; more are refused (RESOURCE_EXHAUSTED)"
    )
    step_tokens: PositiveInt = Field(
        512,
        description="tokens per step, decodes and a prompt chunk together: the most a long "
        "prompt delays running requests (at least max_batch)",
    )
    grace_s: PositiveFloat = Field(5.0, description="seconds to drain calls on SIGTERM")
    trusted_peers: str = Field(
        ROUTER_PEER_NAME,
        description="certificate names, comma-separated, of services (the router) that may "
        "act for the callers they name without a token; needs tls_require_client_cert",
    )

    @model_validator(mode="after")
    def _rank_classes_parse(self) -> Self:
        try:
            self.slot_layout()
        except ValueError as exc:
            raise ValueError(f"{exc}; fix --rank-classes (MINT_RANK_CLASSES)") from None
        return self

    def slot_layout(self) -> SlotLayout:
        return SlotLayout.parse(self.rank_classes, self.slots, self.max_rank)

    @model_validator(mode="after")
    def _host_holds_the_slots(self) -> Self:
        if self.host_budget_mib < self.budget_mib:
            raise ValueError(
                f"host_budget_mib ({self.host_budget_mib:g}) is below budget_mib "
                f"({self.budget_mib:g}): every adapter in a device slot is also held in host "
                "memory, so raise --host-budget-mib (MINT_HOST_BUDGET_MIB) or lower "
                "--budget-mib (MINT_BUDGET_MIB)"
            )
        return self
