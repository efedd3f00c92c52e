"""The trainer's settings: the events topic in, the registry's API out, the blobs read."""

from __future__ import annotations

import os

from pydantic import Field, FilePath, PositiveFloat, PositiveInt, SecretStr, field_validator

from mint.settings import (
    BlobsOptions,
    EventsOptions,
    KafkaOptions,
    KekOptions,
    ListenOptions,
    ProcessOptions,
    S3Options,
    checked_addresses,
    metrics_port,
)


class TrainerSettings(
    KafkaOptions,
    S3Options,
    BlobsOptions,
    KekOptions,
    EventsOptions,
    ListenOptions,
    ProcessOptions,
):
    registry: str = Field(
        description="the registry's address, or its replicas' (host:port[,host:port...])"
    )
    _registry_is_addresses = field_validator("registry")(checked_addresses)
    registry_token: SecretStr = Field(
        description="the trainer's token: a service entry of the registry's tokens file, "
        'for every tenant ("*") (a secret)'
    )
    registry_ca_file: FilePath | None = Field(
        None, description="CA that signed the registry's TLS certificate (none: plaintext)"
    )
    group: str = Field("mint-trainer", description="consumer group the trainers share")
    instance_id: str | None = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or None,
        description="static group membership: a restart under the same id resumes at once "
        "(default: $HOSTNAME, the pod name on Kubernetes)",
    )
    metrics_port: int = metrics_port(9470)
    base_dir: str | None = Field(
        None, description="a local transformers causal-LM directory (none: a tiny built-in base)"
    )
    base_seed: int = Field(0, description="seed of the built-in base")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="where training and scoring run: auto (the first GPU if torch sees one, "
        "else the CPU), cpu, cuda or cuda:N",
    )
    steps: PositiveInt = Field(8, description="optimizer steps per update")
    learning_rate: PositiveFloat = Field(1e-2, description="AdamW's learning rate")
    rank: PositiveInt = Field(8, description="LoRA rank of an adapter's first revision")
    targets: str = Field("q_proj,v_proj", description="LoRA target modules, comma-separated")
